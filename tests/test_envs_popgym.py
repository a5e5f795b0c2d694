"""POPGym's envs on tensors against the popgym package itself: copy popgym's random draws of
an episode (its shuffled decks, ...) into the clone, replay the same random actions in both,
and compare every observation, reward, termination and truncation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from rlgate.envs import ENVS, POPGYM, make_vec, popgym_id
from rlgate.envs.spaces import unflatten_obs

popgym_envs = pytest.importorskip("popgym.envs")

CASES = [(name, level) for name, cls in POPGYM.items() for level in cls.DIFFICULTIES]


def _reference(name: str, level: str) -> gym.Env:
    return getattr(popgym_envs, f"{name}{level}")()


def _random_action(space: gym.Space, rng: np.random.Generator):
    """A uniform action as popgym takes it, and as the clone's [1, ...] batch."""
    if isinstance(space, gym.spaces.Discrete):
        action = int(rng.integers(space.n))
        return action, torch.tensor([action])
    if isinstance(space, gym.spaces.MultiDiscrete):
        action = rng.integers(space.nvec)
        return action, torch.as_tensor(action)[None]
    action = rng.uniform(space.low, space.high).astype(space.dtype)
    return action, torch.as_tensor(action)[None]


def _batch_of(space: gym.Space, n: int, g: torch.Generator) -> torch.Tensor:
    """n uniform actions of a Discrete, MultiDiscrete or Box space, [n, *shape]."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (n,), generator=g)
    if isinstance(space, gym.spaces.Box):
        low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
        return low + (high - low) * torch.rand(n, *space.shape, generator=g)
    high = torch.as_tensor(space.nvec)
    return (torch.rand(n, *space.shape, generator=g) * high).long()


def _same_obs(mine: dict, theirs, space: gym.Space) -> bool:
    flat = {k: v[0].cpu().numpy() for k, v in mine.items()}
    ours = unflatten_obs(flat, space)
    if isinstance(space, gym.spaces.Tuple):
        return all(np.array_equal(a, b) for a, b in zip(ours, theirs))
    return np.array_equal(ours, np.asarray(theirs))


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
@pytest.mark.parametrize(("name", "level"), CASES)
def test_replay_matches_popgym(name, level, native):
    rng = np.random.default_rng(len(name) * 10 + len(level))
    ref = _reference(name, level)
    cls = POPGYM[name]
    clone = cls(1, autoreset=False, **cls.DIFFICULTIES[level])
    if native and not getattr(clone, "native", False):
        pytest.skip("this env has no native path (or the kernels can't be built here)")
    clone.native = native
    assert clone.single_observation_space == ref.observation_space
    assert clone.single_action_space == ref.action_space
    steps = ended = 0
    returns = []
    for _ in range(3):
        seed = int(rng.integers(1 << 30))
        obs, _ = ref.reset(seed=seed)
        clone.reset()
        clone.load_popgym(0, ref, seed)
        assert _same_obs(clone._observe(), obs, ref.observation_space)
        total = 0.0
        for _ in range(clone.max_episode_steps + 1):
            action, batch = _random_action(ref.action_space, rng)
            obs, reward, term, trunc, _ = ref.step(action)
            mine, r, te, tr, _ = clone.step(batch)
            steps += 1
            total += reward
            assert _same_obs(mine, obs, ref.observation_space), (steps, mine, obs)
            assert float(r[0]) == pytest.approx(reward, abs=1e-6), steps
            assert bool(te[0]) == term and bool(tr[0]) == trunc, steps
            if term or trunc:
                ended += 1
                break
        returns.append(total)
    assert ended == 3  # every episode ended, at popgym's step
    assert all(-1.0 - 1e-6 <= g <= 1.0 + 1e-6 for g in returns)


def test_each_clone_names_popgyms_own_id():
    registered = set(gym.registry)
    for name, cls in POPGYM.items():
        for level in cls.DIFFICULTIES:
            assert popgym_id(name, level) in registered, name


@pytest.mark.parametrize("name", list(POPGYM))
def test_gymnasium_make_passes_check_env(name):
    env = gym.make(f"rlgate/popgym-{name}Easy-v0")
    check_env(env.unwrapped)


def test_every_difficulty_is_registered_with_popgyms_parameters():
    for name, cls in POPGYM.items():
        for level, params in cls.DIFFICULTIES.items():
            got_cls, fixed = ENVS[f"rlgate/popgym-{name}{level}-v0"]
            assert got_cls is cls and fixed == params
            ref = _reference(name, level)
            env = cls(1, **params)
            # popgym's own episode length where it states one
            expected = getattr(ref, "max_episode_length", None)
            if expected is not None:
                assert env.max_episode_steps == expected, (name, level)


@pytest.mark.parametrize("name", list(POPGYM))
def test_batched_copies_step_together_and_are_seeded(name):
    def run(seed):
        env = make_vec(f"rlgate/popgym-{name}Easy-v0", 16, seed=seed)
        obs, _ = env.reset()
        g = torch.Generator().manual_seed(0)
        out = []
        for _ in range(250):  # past the first episodes' ends: the copies auto-reset
            a = _batch_of(env.single_action_space, 16, g)
            obs, r, te, tr, _ = env.step(a)
            out.append((torch.cat([v.reshape(16, -1) for v in obs.values()], 1), r, te | tr))
        return out

    a, b, c = run(1), run(1), run(2)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert any(not torch.equal(x[0], y[0]) for x, y in zip(a, c))
    ends = torch.stack([x[2] for x in a])
    assert ends.any()


def test_battleship_places_ships_with_popgyms_law():
    """The clone's boards (drawn without redraws) against popgym's (redrawn until a ship fits):
    per square, how often a ship covers it."""
    ref, n = _reference("Battleship", "Easy"), 3000
    theirs = np.stack([ref.reset(seed=s) and ref.board.copy() for s in range(n)]).astype(bool)
    clone = POPGYM["Battleship"](n, seed=0, size=8)
    clone.reset()
    ours = clone.state["board"].numpy()
    assert (ours.sum(axis=(1, 2)) == 12).all()  # 2 + 3 + 3 + 4 squares, never crossing
    assert np.abs(ours.mean(0) - theirs.mean(0)).max() < 0.045
