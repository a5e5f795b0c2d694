"""The episodic novelty bonus against plain Python sets of each episode's observations."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from rlgate.agents.novelty import EpisodicNovelty
from rlgate.config import TrainConfig


def _naive_new(history: deque, obs: tuple, capacity: int) -> bool:
    """New unless among the last ``capacity`` distinct observations of the episode."""
    if obs in history:
        return False
    history.append(obs)
    if len(history) > capacity:
        history.popleft()
    return True


def _key(obs: dict[str, torch.Tensor], i: int) -> tuple:
    return tuple(tuple(obs[k][i].flatten().tolist()) for k in sorted(obs))


@pytest.mark.parametrize("capacity", [256, 3])
def test_new_observations_are_the_ones_not_seen_in_the_episode(capacity):
    """Random dict observations from a small alphabet (so that they repeat), random episode
    starts: observe's flags equal a set per copy, emptied at each episode start (a deque of the
    last ``capacity`` distinct ones where the ring is small)."""
    gen = torch.Generator().manual_seed(0)
    n, steps = 6, 200

    def draw():
        return {
            "image": torch.randint(0, 2, (n, 2, 2), generator=gen, dtype=torch.uint8),
            "vector": torch.randint(0, 2, (n, 1), generator=gen).float() * 0.5,
        }

    obs = draw()
    first = torch.ones(n, dtype=torch.bool)
    novelty = EpisodicNovelty(obs, capacity=capacity)
    histories = [deque() for _ in range(n)]
    news = 0
    for step in range(steps):
        got = novelty.observe(obs, first)
        for i in range(n):
            if first[i]:
                histories[i].clear()
            want = _naive_new(histories[i], _key(obs, i), capacity)
            assert bool(got[i]) == want, (step, i)
            news += want
        obs = draw()
        first = torch.rand(n, generator=gen) < 0.05
    assert 0 < news < n * steps  # both kinds happened


def test_float_observations_are_compared_exactly():
    """Two float observations that differ in the last bit are different; equal ones equal."""
    x = torch.tensor([[1.0, 2.0]])
    novelty = EpisodicNovelty({"x": x})
    assert novelty.observe({"x": x}, torch.tensor([True])).item()
    assert not novelty.observe({"x": x.clone()}, torch.tensor([False])).item()
    y = torch.nextafter(x, torch.tensor(3.0))
    assert novelty.observe({"x": y}, torch.tensor([False])).item()


def test_rollout_rewards_carry_the_bonus_and_nothing_else_changes():
    """A worker with --novelty-bonus b stores the env's reward plus b on every step that reaches
    an observation new to its episode (checked with sets over the rollout's own observations);
    actions, previous rewards and episode statistics equal a worker's without the bonus."""
    from rlgate.agents.rollout import RolloutWorker
    from rlgate.envs import make_vec
    from rlgate.train import build_model

    bonus = 0.25
    cfg = TrainConfig(env="rlgate/ActiveMatch-v0", num_envs=4, hidden_size=8, encoder_size=8)
    rollouts = []
    for b in (0.0, bonus):
        torch.manual_seed(0)
        env = make_vec(cfg.env, cfg.num_envs, seed=3, delay=2, cue_steps=6)
        model = build_model(cfg, env)
        worker = RolloutWorker(
            env, model, 40, generator=torch.Generator().manual_seed(5), novelty_bonus=b
        )
        worker.collect()  # episodes cross the unroll's start: the memory carries over
        rollouts.append(worker.collect())
    (plain, plain_log), (paid, paid_log) = rollouts
    assert torch.equal(plain.actions, paid.actions)
    assert torch.equal(plain.prev_reward, paid.prev_reward)
    for k in plain_log.stats:
        torch.testing.assert_close(
            plain_log.stats[k], paid_log.stats[k], rtol=0, atol=0, equal_nan=True
        )
    # the reference: each copy's episode so far, from the first unroll's end replayed by sets
    extra = paid.rewards - plain.rewards
    t_len, n = extra.shape
    seen: list[set | None] = [None] * n  # unknown until the copy's first episode start
    checked = 0
    for t in range(t_len + 1):
        for i in range(n):
            key = tuple(paid.obs["image"][t, i].flatten().tolist())
            if paid.is_first[t, i]:
                seen[i] = {key}
                if t > 0:
                    assert extra[t - 1, i] == 0
            elif seen[i] is not None:
                want = bonus if key not in seen[i] else 0.0
                seen[i].add(key)
                assert extra[t - 1, i].item() == pytest.approx(want, abs=1e-6), (t, i)
                checked += 1
    assert checked > n * 10 and (extra > 0).any() and (extra == 0).any()


def test_the_bonus_must_be_finite_and_not_negative():
    with pytest.raises(ValueError, match="novelty-bonus must be finite and >= 0"):
        TrainConfig(novelty_bonus=-0.1)
    with pytest.raises(ValueError, match="novelty-bonus"):
        TrainConfig(novelty_bonus=float("nan"))


def test_checkpointed_worker_keeps_its_novelty_memory():
    """A single-process resume continues the same episodes: the memory travels with them."""
    obs = {"x": torch.tensor([[1], [2]], dtype=torch.uint8)}
    a = EpisodicNovelty(obs)
    a.observe(obs, torch.tensor([True, True]))
    b = EpisodicNovelty(obs)
    b.load_state_dict(a.state_dict())
    assert not b.observe(obs, torch.tensor([False, False])).any()
    with pytest.raises(ValueError, match="does not fit"):
        EpisodicNovelty({"x": obs["x"][:1]}).load_state_dict(a.state_dict())
