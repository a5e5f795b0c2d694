"""The MemoryS* clone against minigrid itself: copy minigrid's layout into the clone, replay the
same random actions, compare every observation, reward and termination."""

from __future__ import annotations

import gymnasium as gym
import minigrid.envs
import numpy as np
import pytest
import torch

from rlgate.envs import make_vec
from rlgate.envs.memory import BALL, GREEN, KEY, MemoryEnv, memory_walls


def _minigrid(size: int):
    if size == 17:  # minigrid registers only the random-length S17; the class is the same
        return minigrid.envs.MemoryEnv(size=17)
    return gym.make(f"MiniGrid-MemoryS{size}-v0").unwrapped


@pytest.mark.parametrize("size", [7, 9, 11, 13, 17])
def test_replay_matches_minigrid(size):
    rng = np.random.default_rng(size)
    ref = _minigrid(size)
    clone = MemoryEnv(1, size=size, autoreset=False)
    steps = ended = 0
    for episode in range(8):
        obs, _ = ref.reset(seed=int(rng.integers(1 << 30)))
        clone.reset()
        clone.load_minigrid(0, ref)
        mine = clone._observe()
        assert np.array_equal(mine["image"][0].numpy(), obs["image"])
        assert int(mine["direction"][0]) == obs["direction"]
        # Turning-heavy policies rarely end an episode early: the last episode runs into the
        # time limit, so truncation is compared too.
        probs = [0.25, 0.25, 0.5, 0, 0, 0, 0] if episode < 7 else [0.45, 0.45, 0.04] + [0.015] * 4
        for _ in range(ref.max_steps):
            action = int(rng.choice(7, p=probs))
            obs, reward, term, trunc, _ = ref.step(action)
            mine, r, te, tr, _ = clone.step(torch.tensor([action]))
            steps += 1
            assert np.array_equal(mine["image"][0].numpy(), obs["image"]), (episode, steps)
            assert int(mine["direction"][0]) == obs["direction"]
            assert float(r[0]) == pytest.approx(reward, abs=1e-6)
            assert bool(te[0]) == term and bool(tr[0]) == trunc
            if term or trunc:
                ended += 1
                break
    assert ended >= 4 and steps > 200


@pytest.mark.parametrize("size", [7, 13])
def test_random_layouts_are_minigrids(size):
    env = make_vec(f"rlgate/MemoryS{size}-v0", 256, seed=0)
    env.reset()
    st = env.state
    packed = st["world"][:, : size * size].view(256, size, size)
    world = torch.stack([packed & 255, (packed >> 8) & 255, packed >> 16], dim=-1)
    walls = torch.as_tensor(memory_walls(size))
    assert ((world[..., 0] == 2) == walls).all()
    mid, end = size // 2, size - 3
    start = world[:, 1, mid - 1]
    top, bottom = world[:, end + 1, mid - 2], world[:, end + 1, mid + 2]
    assert (start[:, 1] == GREEN).all() and set(start[:, 0].tolist()) == {KEY, BALL}
    assert (top[:, 0] != bottom[:, 0]).all()  # one key and one ball at the split
    match_top = top[:, 0] == start[:, 0]
    assert match_top.any() and (~match_top).any()
    expected = torch.where(
        match_top[:, None], torch.tensor([end + 1, mid - 1]), torch.tensor([end + 1, mid + 1])
    )
    assert torch.equal(st["success_pos"], expected)
    x = st["pos"][:, 0]
    assert (st["pos"][:, 1] == mid).all() and x.min() == 1 and x.max() == end
    assert (st["dir"] == 0).all()


def test_reaching_the_matching_object_pays_like_minigrid():
    env = MemoryEnv(1, size=7, autoreset=False)
    env.reset(seed=1)
    st = env.state
    # Put the agent at the junction, facing the matching arm, and step into it.
    target = st["success_pos"][0]
    st["pos"][0] = torch.tensor([target[0], 3])
    st["dir"][0] = 3 if target[1] < 3 else 1  # face the arm
    st["step_count"][0] = 10
    _, reward, term, trunc, info = env.step(torch.tensor([2]))
    assert term[0] and not trunc[0] and info["episode"]["success"][0] == 1.0
    assert float(reward[0]) == pytest.approx(1 - 0.9 * 11 / env.max_steps)
