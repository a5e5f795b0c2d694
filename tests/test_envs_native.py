"""envs/native.c's kernels against their PyTorch paths and plain loops: the same random draws
in, the same decks, boards, states and outputs out; and what they refuse."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rlgate.envs import POPGYM, make_vec, native
from rlgate.envs.popgym_cards import card_kind

pytestmark = pytest.mark.skipif(not native.available()[0], reason="no native env kernels here")


def _fisher_yates(u: list[float], kinds: list[int]) -> list[int]:
    deck = list(kinds)
    for i in range(len(deck) - 1, 0, -1):
        j = int(u[i] * (i + 1))
        deck[i], deck[j] = deck[j], deck[i]
    return deck


@pytest.mark.parametrize(("cards", "kind"), [(52, "suits"), (208, "ranks"), (104, "colors")])
def test_shuffle_is_a_plain_fisher_yates(cards, kind):
    u = torch.rand(40, cards, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    kinds = card_kind(torch.arange(cards), kind)
    got = native.shuffle_kinds(u, kinds)
    for r in range(40):
        assert got[r].tolist() == _fisher_yates(u[r].tolist(), kinds.tolist())


def test_shuffle_deals_every_order_alike():
    """Each card of 6 lands on each position 1/6 of the time (20,000 shuffles, within 5 sigma)."""
    n, cards = 20000, 6
    u = torch.rand(n, cards, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = native.shuffle_kinds(u, torch.arange(cards))
    counts = torch.stack([(got == c).sum(0) for c in range(cards)]).double()
    sigma = (n * (1 / cards) * (1 - 1 / cards)) ** 0.5
    assert (counts - n / cards).abs().max() < 5 * sigma


@pytest.mark.parametrize(("height", "width", "mines"), [(4, 4, 2), (8, 8, 10), (3, 5, 15)])
def test_minesweeper_boards_are_a_plain_partial_shuffle(height, width, mines):
    u = torch.rand(50, height * width, dtype=torch.float64)
    got, counts = native.minesweeper_lay(u, height, width, mines)
    for r in range(50):
        deck = _fisher_yates(u[r].tolist(), list(range(height * width)))
        want = torch.zeros(height * width, dtype=torch.bool)
        want[deck[height * width - mines :]] = True
        assert torch.equal(got[r].flatten(), want)
        board = torch.nn.functional.pad(got[r].long(), (1, 1, 1, 1))
        for y in range(height):
            for x in range(width):
                assert counts[r, y, x] == board[y : y + 3, x : x + 3].sum()


@pytest.mark.parametrize("level", ["Easy", "Medium", "Hard"])
def test_battleship_boards_equal_the_torch_path(level):
    env = POPGYM["Battleship"](1, seed=0, **POPGYM["Battleship"].DIFFICULTIES[level])
    u = torch.rand(300, len(env.SHIPS), generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)  # fmt: skip
    env.native = True
    a = env.place(u)
    env.native = False
    b = env.place(u)
    assert torch.equal(a, b)
    assert (a.sum((1, 2)) == sum(env.SHIPS)).all()  # no two ships cross


def _random_actions(space, n, g):
    if hasattr(space, "low"):  # Box: beyond the bounds too (the env clips)
        return 3 * (2 * torch.rand(n, *space.shape, generator=g) - 1)
    if hasattr(space, "nvec"):
        return (torch.rand(n, *space.shape, generator=g) * torch.as_tensor(space.nvec)).long()
    return torch.randint(0, int(space.n), (n,), generator=g)


@pytest.mark.parametrize(
    "task",
    ["PositionOnlyCartPoleEasy", "VelocityOnlyCartPoleHard", "NoisyPositionOnlyCartPoleMedium",
     "ConcentrationEasy", "ConcentrationHard", "BattleshipEasy", "BattleshipHard",
     "RepeatFirstEasy", "RepeatPreviousMedium", "AutoencodeEasy", "CountRecallMedium",
     "CountRecallHard", "HigherLowerEasy", "MultiarmedBanditMedium", "MineSweeperEasy",
     "MineSweeperHard", "PositionOnlyPendulumEasy", "NoisyPositionOnlyPendulumHard"],
)  # fmt: skip
def test_native_steps_equal_the_torch_path(task):
    """From the same state at every step (the torch env takes the native env's state after each
    step: the card games' resets shuffle differently), both paths give the same rewards, ends,
    episode statistics and observations (of the copies whose episode goes on; of every copy,
    and the ended episodes' last ones, where the env draws its resets from its pools)."""
    a = make_vec(f"rlgate/popgym-{task}-v0", 64, seed=4)
    b = make_vec(f"rlgate/popgym-{task}-v0", 64, seed=4)
    assert a.native
    b.native = False
    a.reset()
    b.reset()
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(5)
    ends = 0
    for _ in range(400):
        actions = _random_actions(a.single_action_space, 64, g)
        oa, ra, ta, ua, ia = a.step(actions)
        ob, rb, tb, ub, ib = b.step(actions)
        going = ~ia["done"] if not a.pools else torch.ones(64, dtype=torch.bool)
        for key in oa:
            assert torch.equal(oa[key][going], ob[key][going]), key
        assert ("final_obs" in ia) == ("final_obs" in ib)
        if a.pools and "final_obs" in ia:
            cut = ia["done"] & ua
            for key in oa:
                assert torch.equal(ia["final_obs"][key][cut], ib["final_obs"][key][cut]), key
        assert torch.equal(ra, rb) and torch.equal(ta, tb) and torch.equal(ua, ub)
        ends += int(ia["done"].sum())
        for key in ("return", "length"):
            assert torch.equal(ia["episode"].get(key, torch.zeros(0)),
                               ib["episode"].get(key, torch.zeros(0)))  # fmt: skip
        b.load_state_dict(a.state_dict())
    assert ends > 0


def test_kernels_refuse_out_of_range_indices_and_wrong_tensors():
    pole = make_vec("rlgate/popgym-PositionOnlyCartPoleEasy-v0", 4, seed=0)
    pole.reset()
    with pytest.raises(ValueError, match="out of range"):
        native.cartpole_run(pole, torch.tensor([0, 1, 2, 0]), None)
    with pytest.raises(ValueError, match="shape"):
        native.cartpole_run(pole, torch.tensor([0, 1]), None)
    noisy = make_vec("rlgate/popgym-NoisyPositionOnlyCartPoleEasy-v0", 4, seed=0)
    noisy.reset()
    with pytest.raises(ValueError, match="shape"):  # a noisy env's bounds: low, then high
        native.cartpole_run(noisy, torch.tensor([0, 1, 1, 0]), torch.zeros(2))
    pole.state["physics"] = pole.state["physics"].float()
    with pytest.raises(ValueError, match="float64"):
        native.cartpole_run(pole, torch.tensor([0, 1, 1, 0]), None)
    with pytest.raises(ValueError, match="out of range"):
        native.battleship_place(torch.rand(2, 1, dtype=torch.float64), 3, torch.tensor([4]))
    env = make_vec("rlgate/popgym-BattleshipEasy-v0", 2, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="out of range"):
        native.battleship_run(env, torch.tensor([[0, 0], [0, 99]]), env._ships)
    with pytest.raises(ValueError, match="out of range"):  # a ship longer than the board
        native.battleship_run(env, torch.tensor([[0, 0], [0, 1]]), torch.tensor([2, 9]))
    before = {k: v.clone() for k, v in env.state.items()}
    with pytest.raises(ValueError, match="valid actions are MultiDiscrete"):
        env.step(torch.tensor([[0, 0], [0, 99]]))  # the step's own message, nothing written
    for key, value in env.state.items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, equal_nan=True)
    pole = make_vec("rlgate/popgym-PositionOnlyCartPoleEasy-v0", 4, seed=0)
    pole.reset()
    with pytest.raises(ValueError, match=r"valid actions are 0\.\.1"):
        pole.step(torch.tensor([0, 1, 2, 0]))
    conc = make_vec("rlgate/popgym-ConcentrationEasy-v0", 2, seed=0)
    conc.reset()
    with pytest.raises(ValueError, match="out of range"):
        native.concentration_step(conc, torch.tensor([0, -5]))
    cards = make_vec("rlgate/popgym-CountRecallEasy-v0", 2, seed=0)
    cards.reset()
    with pytest.raises(ValueError, match=r"valid actions are 0\.\.26"):
        cards.step(torch.tensor([0, 27]))
    cards.state["order"][1] = 9  # a colour past the tallies' end
    with pytest.raises(ValueError, match="out of range"):
        cards.step(torch.tensor([0, 0]))
    conc.state["turned"][1, 0] = 77
    with pytest.raises(ValueError, match="out of range"):
        native.concentration_observe(conc)


def test_no_kernels_means_the_torch_path_with_a_warning(monkeypatch, caplog):
    native._warn_once.cache_clear()
    monkeypatch.setattr(native, "available", lambda: (False, "no C compiler found"))
    with caplog.at_level(logging.WARNING, logger="rlgate.envs.native"):
        env = make_vec("rlgate/popgym-ConcentrationEasy-v0", 4, seed=0)
    assert not env.native
    assert "no C compiler found" in caplog.text
    native._warn_once.cache_clear()
    monkeypatch.setenv("RLGATE_NATIVE_ENVS", "0")
    assert not make_vec("rlgate/popgym-CountRecallEasy-v0", 4, seed=0).native
    assert not native.native_for(torch.device("cuda"))
    np.testing.assert_equal(env.reset()[0]["obs"].shape, (4, 52))


def _same(x, y) -> bool:
    """Equal, bit for bit, NaN where NaN."""
    return (
        x.dtype == y.dtype
        and x.shape == y.shape
        and bool(((x == y) | (x.isnan() & y.isnan()) if x.is_floating_point() else x == y).all())
    )


@pytest.mark.parametrize(
    "options",
    [
        {"active": False, "delay": 3},
        {"active": False, "delay": 0, "num_colours": 2},
        {"active": True, "delay": 15},
        {"active": True, "delay": 2, "num_colours": 5, "cue_steps": 4, "choice_steps": 3},
        {"active": True, "delay": 6, "num_apples": 48, "apple_respawn": 1, "apple_reward": -0.5},
        {"active": False, "delay": 8, "num_apples": 0, "match_reward": 2.5},
    ],
)
def test_match_native_steps_equal_the_torch_path(options):
    """The same seed and actions give the same trajectory on both paths: observations,
    rewards, ends, episode statistics and the whole state after every step (a new episode's
    deal is drawn by the same PyTorch code on both)."""
    options = dict(options)
    env_id = "rlgate/ActiveMatch-v0" if options.pop("active") else "rlgate/PassiveMatch-v0"
    a = make_vec(env_id, 32, seed=3, **options)
    b = make_vec(env_id, 32, seed=3, **options)
    assert a.native
    b.native = False
    oa, _ = a.reset()
    ob, _ = b.reset()
    assert _same(oa["image"], ob["image"])
    g = torch.Generator().manual_seed(7)
    ends = seen = eaten = 0
    for _ in range(600):
        actions = torch.randint(0, 4, (32,), generator=g)
        oa, ra, ta, ua, ia = a.step(actions)
        ob, rb, tb, ub, ib = b.step(actions)
        assert _same(oa["image"], ob["image"])
        assert _same(ra, rb) and _same(ta, tb) and _same(ua, ub)
        assert _same(ia["done"], ib["done"]) and _same(ia["is_first"], ib["is_first"])
        assert ia["episode"].keys() == ib["episode"].keys()
        for key in ia["episode"]:
            assert _same(ia["episode"][key], ib["episode"][key]), key
        for key in a.state:
            assert _same(a.state[key], b.state[key]), key
        ends += int(ia["done"].sum())
        if ia["episode"]:
            seen += int(ia["episode"]["cue_seen"].sum())
            eaten += int((ia["episode"]["apple_reward"] != 0).sum())
    assert ends > 50 and seen > 0  # episodes ended, and some saw the cue
    assert eaten > 0 or options.get("num_apples") == 0 or options["delay"] < 3


def test_match_native_refuses_bad_actions_and_states():
    env = make_vec("rlgate/ActiveMatch-v0", 4, seed=0, delay=2)
    env.reset()
    with pytest.raises(ValueError, match="valid actions"):
        env.step(torch.tensor([0, 1, 4, 0]))
    with pytest.raises(ValueError):
        native.match_step(env, torch.tensor([0, 1, -1, 0]))
    before = {k: v.clone() for k, v in env.state.items()}
    env.state["pos"][2] = torch.tensor([0, 5])  # at the canvas's edge: a view would leave it
    with pytest.raises(ValueError, match="outside the canvas"):
        native.match_step(env, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="out of range"):
        native.grid_observe(env)
    env.state["pos"] = before["pos"].clone()
    env.state["apples"][1, 0] = 49  # not a cell of the 7x7 room
    with pytest.raises(ValueError, match="outside the canvas"):
        native.match_step(env, torch.tensor([0, 1, 2, 3]))
    env.state["apples"] = before["apples"]
    for layout, cell in (("_square_cells", (1, 0)), ("_choice_start", (0,))):
        good = getattr(env, layout).clone()
        getattr(env, layout)[cell] = env.state["grid"].shape[2] - 1  # the canvas's last column
        with pytest.raises(ValueError, match="outside the canvas"):
            native.match_step(env, torch.tensor([0, 1, 2, 3]))
        setattr(env, layout, good)
    for key, value in before.items():  # a refused step writes nothing
        assert _same(env.state[key], value), key
    with pytest.raises(ValueError, match="contiguous CPU"):
        native.match_step(env, torch.tensor([0, 1, 2, 3], dtype=torch.int32))
    draws = env._deal(2)
    for i, bad in (
        (0, torch.full((2, 49), 49)),
        (2, torch.tensor([0, 3])),
        (4, torch.tensor([0, 49])),
    ):
        wrong = list(draws)
        wrong[i] = bad
        with pytest.raises(ValueError, match="match_deal"):
            native.match_deal(env, torch.tensor([0, 1]), *wrong)
    with pytest.raises(ValueError, match="match_deal"):
        native.match_deal(env, torch.tensor([0, 4]), *draws)  # copy 4 of 4
    for key, value in before.items():
        assert _same(env.state[key], value), key


@pytest.mark.parametrize("size", [7, 11, 17])
def test_memory_native_steps_equal_the_torch_path(size):
    """The same seed and actions give the same trajectory on both paths, bit for bit (a new
    episode's layout is drawn by the same PyTorch code on both)."""
    a = make_vec(f"rlgate/MemoryS{size}-v0", 32, seed=2)
    b = make_vec(f"rlgate/MemoryS{size}-v0", 32, seed=2)
    assert a.native
    b.native = False
    oa, _ = a.reset()
    ob, _ = b.reset()
    g = torch.Generator().manual_seed(3)
    ends = wins = cut = 0
    for _ in range(1500):
        # mostly turns and forward moves, so that episodes reach the split
        actions = torch.randint(0, 7, (32,), generator=g)
        actions = torch.where(torch.rand(32, generator=g) < 0.6, 2, actions)
        for key in oa:
            assert _same(oa[key], ob[key]), key
        oa, ra, ta, ua, ia = a.step(actions)
        ob, rb, tb, ub, ib = b.step(actions)
        assert _same(ra, rb) and _same(ta, tb) and _same(ua, ub)
        assert ("final_obs" in ia) == ("final_obs" in ib)
        for key in ia.get("final_obs", {}):
            assert _same(ia["final_obs"][key], ib["final_obs"][key]), key
        for key in ia["episode"]:
            assert _same(ia["episode"][key], ib["episode"][key]), key
        for key in a.state:
            assert _same(a.state[key], b.state[key]), key
        ends += int(ia["done"].sum())
        wins += int((ra > 0).sum())
        cut += int(ua.sum())
    assert ends > 20 and wins > 0 and (cut > 0 or size > 7)


def test_memory_native_refuses_bad_actions_and_states():
    env = make_vec("rlgate/MemoryS7-v0", 4, seed=0)
    env.reset()
    with pytest.raises(ValueError, match="valid actions"):
        env.step(torch.tensor([0, 1, 7, 0]))
    before = {k: v.clone() for k, v in env.state.items()}
    env.state["pos"][1] = torch.tensor([0, 3])  # on the outer wall
    with pytest.raises(ValueError, match="state out of range"):
        native.memory_step(env, torch.tensor([0, 1, 2, 3]))
    env.state["pos"][1] = torch.tensor([9, 3])  # outside the grid
    with pytest.raises(ValueError, match="out of range"):
        native.memory_observe(env)
    env.state["pos"] = before["pos"]
    env.state["dir"][0] = 4
    with pytest.raises(ValueError, match="state out of range"):
        native.memory_step(env, torch.tensor([0, 1, 2, 3]))
    env.state["dir"] = before["dir"]
    for key, value in before.items():  # a refused step writes nothing
        assert _same(env.state[key], value), key
