"""The batched env API, iterating the registry (as minigrid's tests do): gymnasium's
check_env, determinism, bad input, auto-reset and batched == N single envs."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env, data_equivalence

from rlgate.envs import ENVS, make_vec

# POPGym's Medium and Hard ids are the Easy ones' classes with other parameters: slow only
IDS = [
    pytest.param(i, marks=pytest.mark.slow) if i.endswith(("Medium-v0", "Hard-v0")) else i
    for i in ENVS
]
FAST = {"rlgate/PassiveMatch-v0": {"delay": 4}, "rlgate/ActiveMatch-v0": {"delay": 4}}


def random_actions(space: gym.Space, n: int, g: torch.Generator) -> torch.Tensor:
    """n uniform actions of a Discrete, MultiDiscrete or Box space, [n, *shape]."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (n,), generator=g)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return (torch.rand(n, *space.shape, generator=g) * torch.as_tensor(space.nvec)).long()
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return low + (high - low) * torch.rand(n, *space.shape, generator=g)


def _rollout(env, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    obs, _ = env.reset()
    out = [obs]
    for _ in range(steps):
        a = random_actions(env.single_action_space, env.num_envs, g)
        step = env.step(a)
        out.append(step)
    return out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):  # NaN marks a statistic that does not apply: equal to NaN
        return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())
    return a == b


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_make_passes_check_env(env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    # seeded resets are reproducible
    obs2, _ = env.reset(seed=3)
    assert data_equivalence(obs, obs2)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectories(env_id):
    opts = FAST.get(env_id, {})
    a = _rollout(make_vec(env_id, 5, seed=11, **opts), 120, seed=1)
    b = _rollout(make_vec(env_id, 5, seed=11, **opts), 120, seed=1)
    c = _rollout(make_vec(env_id, 5, seed=12, **opts), 120, seed=1)
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("env_id", IDS)
def test_batched_equals_single_envs_stepped_apart(env_id):
    """Each copy of a batch evolves exactly as a one-copy env started from its state (where an
    env draws each observation's noise from its stream as it makes it, the noisy control
    tasks, every part of the state but that noise)."""
    opts = FAST.get(env_id, {})
    n, steps = 4, 60
    batch = make_vec(env_id, n, seed=5, **opts)
    batch.reset()
    singles = []
    for i in range(n):
        single = make_vec(env_id, 1, seed=100 + i, **opts)
        single.reset()
        single.set_state(0, batch.get_state(i))
        singles.append(single)
    g = torch.Generator().manual_seed(0)
    alive = torch.ones(n, dtype=torch.bool)
    compared = 0
    for _ in range(steps):
        actions = random_actions(batch.single_action_space, n, g)
        obs, reward, term, trunc, info = batch.step(actions)
        for i in range(n):
            if not alive[i]:
                continue
            o, r, te, tr, inf = singles[i].step(actions[i : i + 1])
            assert r[0] == reward[i] and te[0] == term[i] and tr[0] == trunc[i]
            if inf["done"][0]:  # the next episodes draw from different generators
                for key, value in inf["episode"].items():
                    assert _same(value[0], info["episode"][key][i]), key
                alive[i] = False
                continue
            if "noise" in batch.pools:  # the state the noise is added to
                mine, theirs = singles[i].get_state(0), batch.get_state(i)
                for key in set(mine) - {"obs_noise"}:
                    assert _same(mine[key], theirs[key]), key
            else:
                for key in obs:
                    assert torch.equal(o[key][0], obs[key][i]), key
            compared += 1
    assert compared > n * 5  # MineSweeperEasy: random play hits a mine within ~8 steps


@pytest.mark.parametrize("env_id", IDS)
def test_autoreset_in_the_same_step(env_id):
    opts = FAST.get(env_id, {})
    env = make_vec(env_id, 8, seed=2, **opts)
    obs, info = env.reset()
    assert info["is_first"].all()
    first_obs = obs
    g = torch.Generator().manual_seed(0)
    ended = 0
    for _ in range(400):
        obs, _, term, trunc, info = env.step(random_actions(env.single_action_space, 8, g))
        done = term | trunc
        assert torch.equal(info["is_first"], done) and torch.equal(info["done"], done)
        ended += int(done.sum())
        if done.any():
            stats = info["episode"]
            assert (stats["length"][done] >= 1).all()
            assert set(stats) >= {"return", "length", "success"}
    assert ended > 0
    if "image" in first_obs:
        assert first_obs["image"].dtype == torch.uint8


def test_bad_input_is_a_value_error_naming_what_is_valid():
    with pytest.raises(ValueError, match="valid envs: rlgate/PassiveMatch-v0"):
        make_vec("rlgate/PasiveMatch-v0", 2)
    with pytest.raises(ValueError, match="delay must be >= 0"):
        make_vec("rlgate/PassiveMatch-v0", 2, delay=-1)
    with pytest.raises(ValueError, match="num_colours must be >= 2"):
        make_vec("rlgate/ActiveMatch-v0", 2, num_colours=1)
    with pytest.raises(ValueError, match="num_envs must be"):
        make_vec("rlgate/TMaze-v0", 0)
    with pytest.raises(ValueError, match=r"does not exist|invalid device|cpu or cuda"):
        make_vec("rlgate/TMaze-v0", 2, device="cuda:7" if torch.cuda.is_available() else "cuda")
    with pytest.raises(ValueError, match="invalid device"):
        make_vec("rlgate/TMaze-v0", 2, device="potato")
    with pytest.raises(ValueError, match="valid options: active, delay"):
        make_vec("rlgate/PassiveMatch-v0", 2, dealy=3)
    with pytest.raises(ValueError, match="fixed by this env id"):
        make_vec("rlgate/PassiveMatch-v0", 2, active=True)
    with pytest.raises(ValueError, match="length must be >= 1"):
        make_vec("rlgate/TMaze-v0", 2, length=0)
    env = make_vec("rlgate/TMaze-v0", 3)
    env.reset()
    with pytest.raises(ValueError, match=r"valid actions are 0..3"):
        env.step(torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match=r"valid actions are 0..3"):
        env.step(torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match="integer tensor of shape"):
        env.step(torch.tensor([0.0, 1.0, 2.0]))


def test_minigrid_ids_run_behind_the_same_api():
    env = make_vec("MiniGrid-MemoryS7-v0", 3, seed=0)
    obs, info = env.reset()
    assert set(obs) == {"image", "direction"} and obs["image"].shape == (3, 7, 7, 3)
    assert info["is_first"].all()
    g = torch.Generator().manual_seed(0)
    ended = 0
    for _ in range(300):
        obs, reward, term, trunc, info = env.step(torch.randint(0, 7, (3,), generator=g))
        assert torch.equal(info["is_first"], term | trunc)
        ended += int((term | trunc).sum())
        assert obs["image"].dtype == torch.uint8 and reward.dtype == torch.float32
    assert ended > 0
    with pytest.raises(ValueError, match=r"valid actions are 0\.\.6"):
        env.step(torch.tensor([0, 7, 1]))
    env.close()
