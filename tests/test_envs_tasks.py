"""Hand-built scenarios for the tasks' phases and rewards (docs/gates.md, the tasks): the right
colour pays, the wrong one does not, apples pay and respawn, timeouts end the episode; the T-maze's
cue and arms."""

from __future__ import annotations

import math

import pytest
import torch

from rlgate.envs import make_vec
from rlgate.envs.grid import APPLE, COLOUR, FLOOR, RADIUS
from rlgate.envs.match import CHOICE, CUE, DISTRACTOR

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def _act(env, action: int):
    return env.step(torch.full((env.num_envs,), action, dtype=torch.long))


def _colours(obs):
    return obs["image"][..., COLOUR:].sum(dim=(1, 2))  # [N, k]: cells of each colour in view


def _to_choice(env):
    """Step (mostly into walls) until the choice phase starts; return that observation."""
    for _ in range(env.cue_steps + env.delay):
        obs, *_ = _act(env, DOWN)
        if env.state["phase"][0] == CHOICE:
            return obs
    raise AssertionError("the choice phase did not start in time")


def _touch(env, colour: int):
    """From the choice room's start, touch the square of ``colour``. Returns the last step."""
    order = env.state["choice_order"][0].tolist()
    j = order.index(colour)
    col = env.state["pos"][0, 1].item() - RADIUS
    target = 1 + 2 * j
    for _ in range(abs(target - col)):
        _act(env, RIGHT if target > col else LEFT)
    _act(env, UP)
    return _act(env, UP)


@pytest.mark.parametrize("active", [False, True])
def test_cue_phase_shows_the_cue_only_in_passive(active):
    env_id = "rlgate/ActiveMatch-v0" if active else "rlgate/PassiveMatch-v0"
    env = make_vec(env_id, 64, seed=0, num_colours=4)
    obs, _ = env.reset()
    seen = _colours(obs)
    if active:
        assert seen.sum() == 0  # the cue starts out of view
    else:
        cue = env.state["cue"]
        assert torch.equal(seen.argmax(1), cue) and (seen.sum(1) == 1).all()
    assert (env.state["phase"] == CUE).all()


def test_active_cue_can_be_found_by_exploring():
    env = make_vec("rlgate/ActiveMatch-v0", 32, seed=1, cue_steps=60)
    env.reset()
    g = torch.Generator().manual_seed(0)
    seen = torch.zeros(32, dtype=torch.bool)
    for _ in range(59):
        obs, *_ = env.step(torch.randint(0, 4, (32,), generator=g))
        seen |= _colours(obs).sum(1) > 0
    assert seen.float().mean() > 0.5


def test_phases_follow_their_lengths_and_the_right_colour_pays():
    env = make_vec("rlgate/PassiveMatch-v0", 1, seed=3, delay=7, cue_steps=4, choice_steps=9)
    env.reset()
    for t in range(4):
        assert env.state["phase"][0] == CUE, t
        obs, *_ = _act(env, DOWN)
    assert env.state["phase"][0] == DISTRACTOR
    assert (env.state["grid"][0] == APPLE).sum() == env.num_apples
    assert _colours(obs).sum() == 0  # nothing in the distractor room says which colour
    obs = _to_choice(env)
    assert _colours(obs)[0].tolist() == [1, 1, 1]  # every colour is in view at the start
    cue = int(env.state["cue"][0])
    obs, reward, term, trunc, info = _touch(env, cue)
    assert reward[0] == 10.0 and term[0] and not trunc[0]
    ep = {k: v[0].item() for k, v in info["episode"].items()}
    assert ep["success"] == 1.0 and ep["choice_reward"] == 10.0
    assert ep["return"] == 10.0 + ep["apple_reward"]
    assert info["is_first"][0] and env.state["phase"][0] == CUE  # auto-reset


def _cue_square_position(env) -> int:
    """Where the cue's colour stands in the choice room (0 = leftmost), read off the grid."""
    row = env.state["grid"][0, 1 + RADIUS].tolist()
    cols = [c for c, v in enumerate(row) if v >= COLOUR]
    return [row[c] - COLOUR for c in cols].index(int(env.state["cue"][0]))


@pytest.mark.parametrize("right", [True, False])
def test_success_is_also_reported_per_position_of_the_cue_square(right):
    seen = set()
    for seed in range(8):
        env = make_vec("rlgate/PassiveMatch-v0", 1, seed=seed, delay=2, num_colours=3)
        env.reset()
        _to_choice(env)
        pos, cue = _cue_square_position(env), int(env.state["cue"][0])
        *_, info = _touch(env, cue if right else (cue + 1) % 3)
        ep = {k: v[0].item() for k, v in info["episode"].items()}
        assert ep[f"success_at_{pos}"] == float(right) == ep["success"]
        others = [p for p in range(3) if p != pos]
        assert all(math.isnan(ep[f"success_at_{p}"]) for p in others)
        seen.add(pos)
    assert seen == {0, 1, 2}  # the cue's square landed at every position


def test_the_wrong_colour_pays_nothing_and_ends():
    env = make_vec("rlgate/PassiveMatch-v0", 1, seed=4, delay=3, num_colours=3)
    env.reset()
    _to_choice(env)
    wrong = (int(env.state["cue"][0]) + 1) % 3
    _, reward, term, _, info = _touch(env, wrong)
    assert reward[0] == 0.0 and term[0]
    assert info["episode"]["success"][0] == 0.0 and info["episode"]["choice_reward"][0] == 0


def test_timeout_in_the_choice_phase_ends_with_nothing():
    env = make_vec("rlgate/PassiveMatch-v0", 1, seed=5, delay=3, cue_steps=2, choice_steps=6)
    env.reset()
    _to_choice(env)
    for t in range(6):
        _, reward, term, trunc, info = _act(env, DOWN)  # a wall: nothing happens
        assert reward[0] == 0.0 and not trunc[0]
        assert bool(term[0]) == (t == 5)
    assert info["episode"]["length"][0] == 2 + 3 + 6 == env.max_episode_steps
    assert info["episode"]["success"][0] == 0.0


def test_apples_pay_and_respawn():
    env = make_vec(
        "rlgate/PassiveMatch-v0",
        1,
        seed=6,
        delay=40,
        cue_steps=1,
        apple_respawn=5,
        apple_reward=2.5,
        num_apples=1,
    )
    env.reset()
    _act(env, DOWN)
    st = env.state
    assert st["phase"][0] == DISTRACTOR
    apple = (st["grid"][0] == APPLE).nonzero()[0]
    below = apple + torch.tensor([1, 0])
    if st["grid"][0, below[0], below[1]] != FLOOR:  # the apple is on the bottom row
        below = apple - torch.tensor([1, 0])
    st["pos"][0] = below
    toward = UP if below[0] > apple[0] else DOWN
    _, reward, *_ = _act(env, toward)
    assert reward[0] == 2.5 and st["grid"][0, apple[0], apple[1]] == FLOOR
    _act(env, DOWN if toward == UP else UP)  # step off the apple's cell
    for _ in range(2):
        _act(env, LEFT if st["pos"][0, 1] > RADIUS + 1 else RIGHT)
        assert st["grid"][0, apple[0], apple[1]] == FLOOR
    _act(env, DOWN)
    assert st["grid"][0, apple[0], apple[1]] == APPLE  # back 4 steps after it was eaten
    assert float(st["apple_reward"][0]) == 2.5


def test_zero_delay_goes_from_cue_to_choice():
    env = make_vec("rlgate/PassiveMatch-v0", 1, seed=7, delay=0, cue_steps=3)
    env.reset()
    for _ in range(3):
        _act(env, DOWN)
    assert env.state["phase"][0] == CHOICE


# ---------------------------------------------------------------- T-maze
@pytest.mark.parametrize("correct", [True, False])
def test_tmaze_cue_and_arms(correct):
    length = 6
    env = make_vec("rlgate/TMaze-v0", 1, seed=8, length=length)
    obs, _ = env.reset()
    cue = int(env.state["cue"][0])
    # the cue is the square just behind the start cell, and only it is coloured
    assert obs["image"][0, 2, 1, COLOUR + cue] == 1 and _colours(obs).sum() == 1
    for _ in range(length - 1):
        obs, reward, term, *_ = _act(env, RIGHT)
        assert not term[0] and reward[0] == 0
    assert _colours(obs).sum() == 0  # at the junction the cue is out of view
    go_up = (cue == 0) == correct
    _, reward, term, trunc, info = _act(env, UP if go_up else DOWN)
    assert term[0] and not trunc[0]
    assert reward[0] == (1.0 if correct else 0.0)
    assert info["episode"]["success"][0] == float(correct)
    assert info["episode"]["length"][0] == length


def test_tmaze_times_out_as_truncation():
    env = make_vec("rlgate/TMaze-v0", 2, seed=9, length=3, max_steps=7)
    env.reset()
    for t in range(7):
        _, reward, term, trunc, _ = _act(env, LEFT)  # into the cue square: blocked
        assert not term.any() and (reward == 0).all()
        assert bool(trunc.all()) == (t == 6)


@pytest.mark.parametrize("active", [False, True])
def test_cue_seen_says_whether_a_cue_phase_observation_showed_the_square(active):
    """cue_seen against the observations themselves (a colour in view during the cue phase),
    and success_seen / success_unseen as the success of those episodes, NaN in the others."""
    env_id = "rlgate/ActiveMatch-v0" if active else "rlgate/PassiveMatch-v0"
    n = 48
    env = make_vec(env_id, n, seed=5, delay=2, choice_steps=6)
    obs, _ = env.reset()
    g = torch.Generator().manual_seed(3)
    showed = _colours(obs).sum(1) > 0
    in_cue = env.state["phase"] == CUE
    ended = {}
    for _ in range(env.max_episode_steps):
        obs, _, term, trunc, info = env.step(torch.randint(0, 4, (n,), generator=g))
        in_cue = in_cue & (env.state["phase"] == CUE)
        showed |= in_cue & (_colours(obs).sum(1) > 0)
        for b in (term | trunc).nonzero().squeeze(1).tolist():
            if b not in ended:
                ended[b] = {k: v[b].item() for k, v in info["episode"].items()}
    assert len(ended) == n  # every copy finished its first episode
    seen = [bool(showed[b]) for b in range(n)]
    if active:
        assert 0 < sum(seen) < n  # a random walk finds the square sometimes
    else:
        assert all(seen)
    for b, ep in ended.items():
        assert ep["cue_seen"] == float(seen[b])
        hit, miss = ("success_seen", "success_unseen")[:: 1 if seen[b] else -1]
        assert ep[hit] == ep["success"] and math.isnan(ep[miss])
