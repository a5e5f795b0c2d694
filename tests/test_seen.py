"""The seen-so-far auxiliary loss against plain Python loops, and a core that learns from it to
remember a colour it no longer sees."""

from __future__ import annotations

import math

import pytest
import torch

from rlgate.agents.actor_critic import ActorCritic
from rlgate.agents.ppo import PPO
from rlgate.agents.rollout import RolloutWorker
from rlgate.agents.seen import channels_in_view, seen_loss, seen_targets
from rlgate.config import PPOConfig, TrainConfig
from rlgate.envs import make_vec


def test_targets_are_what_each_episode_has_shown_so_far():
    """Random presence flags and episode starts against a set per env, emptied at each
    episode's first step; steps of an episode under way at step 0 are not valid."""
    gen = torch.Generator().manual_seed(0)
    t_len, n, c = 60, 5, 4
    present = torch.rand(t_len, n, c, generator=gen) < 0.1
    is_first = torch.rand(t_len, n, generator=gen) < 0.1
    is_first[0, 0] = True  # one env starts with the window
    targets, valid = seen_targets(present, is_first)
    for i in range(n):
        seen, started = set(), False
        for t in range(t_len):
            if is_first[t, i]:
                seen, started = set(), True
            seen |= {k for k in range(c) if present[t, i, k]}
            assert bool(valid[t, i]) == started, (t, i)
            assert targets[t, i].tolist() == [float(k in seen) for k in range(c)], (t, i)
    assert valid.any() and not valid.all() and (targets[valid] == 0).any()


def test_channels_in_view_are_the_channels_of_some_cell():
    env = make_vec("rlgate/ActiveMatch-v0", 6, seed=1, delay=3)
    obs, _ = env.reset()
    image = obs["image"]  # [N, 5, 5, channels] one-hot
    got = channels_in_view(image.float().flatten(1, 2))
    for i in range(6):
        cells = [image[i, r, q].tolist() for r in range(5) for q in range(5)]
        want = [any(cell[k] for cell in cells) for k in range(image.shape[-1])]
        assert got[i].tolist() == want


def test_loss_is_the_mean_cross_entropy_over_valid_steps():
    logits = torch.tensor([[[2.0, -1.0]], [[0.5, 0.0]], [[-3.0, 4.0]]])  # [T=3, B=1, C=2]
    targets = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    valid = torch.tensor([[True], [False], [True]])

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    want = (bce(2.0, 1) + bce(-1.0, 0) + bce(-3.0, 1) + bce(4.0, 1)) / 4
    assert seen_loss(logits, targets, valid).item() == pytest.approx(want, rel=1e-6)
    assert seen_loss(logits, targets, torch.zeros_like(valid)).item() == 0.0


def _model(env, seen_head: bool, seed: int = 7) -> ActorCritic:
    torch.manual_seed(seed)
    return ActorCritic(
        env.single_observation_space, env.single_action_space, "ur-lstm", 32, 32, None, 16,
        True, observation_kinds=env.observation_kinds, view_pool=True, seen_head=seen_head,
    )  # fmt: skip


def test_the_head_changes_nothing_else():
    """The same initial weights with and without the head, and the same policy and values."""
    env = make_vec("rlgate/PassiveMatch-v0", 4, seed=0, delay=2)
    plain, seen = _model(env, False), _model(env, True)
    shared = {k: v for k, v in seen.state_dict().items() if not k.startswith("seen.")}
    assert shared.keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items())
    rollout, _ = RolloutWorker(env, plain, 20).collect()
    inputs = (rollout.obs, rollout.prev_action, rollout.prev_reward, rollout.is_first)
    p1, v1, _ = plain(*inputs, rollout.states[0])
    p2, v2, _, logits = seen.forward_seen(*inputs, rollout.states[0])
    assert torch.equal(p1, p2) and torch.equal(v1, v2)
    assert logits.shape == (21, 4, env.single_observation_space["image"].shape[-1])
    with pytest.raises(RuntimeError, match="seen_head"):
        plain.forward_seen(*inputs, rollout.states[0])


def _remembered_colour_accuracy(model, rollout) -> tuple[float, int]:
    """At the steps where a colour was seen earlier in the episode and none is in view now
    (the distractor phase), how often the head's most likely colour is the one seen."""
    t_len = rollout.length
    obs = {k: v[:t_len] for k, v in rollout.obs.items()}
    present = model.channels_in_view(obs)
    targets, valid = seen_targets(present, rollout.is_first[:t_len])
    colours = slice(3, None)  # after floor, wall, apple
    memory = valid & ~present[..., colours].any(-1) & (targets[..., colours].sum(-1) == 1)
    with torch.no_grad():
        *_, logits = model.forward_seen(
            obs, rollout.prev_action[:t_len], rollout.prev_reward[:t_len],
            rollout.is_first[:t_len], rollout.states[0],
        )  # fmt: skip
    hit = logits[..., colours].argmax(-1) == targets[..., colours].argmax(-1)
    return float(hit[memory].float().mean()), int(memory.sum())


def test_the_loss_teaches_the_core_to_remember_a_colour_out_of_view():
    """PassiveMatch at delay 8, the agent's own (near-uniform) actions: PPO updates with the
    seen-so-far loss beside the policy loss (value and entropy weights 0) make the head name
    the cue's colour through the distractor phase of held-out episodes, from chance (1/3)."""
    env = make_vec("rlgate/PassiveMatch-v0", 32, seed=0, delay=8)
    model = _model(env, True)
    worker = RolloutWorker(env, model, 64, generator=torch.Generator().manual_seed(1))
    held_out, _ = RolloutWorker(
        make_vec("rlgate/PassiveMatch-v0", 32, seed=9, delay=8), model, 64
    ).collect()
    before, count = _remembered_colour_accuracy(model, held_out)
    assert count > 200 and before < 0.6
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    cfg = PPOConfig(epochs=4, num_minibatches=2, ent_coef=0.0, vf_coef=0.0)
    learner = PPO(model, cfg, 0.99, 1.0, opt, seen_coef=1.0)
    seen = []
    for _ in range(30):
        rollout, _ = worker.collect()
        metrics = learner.update(rollout)
        seen.append(metrics["seen"])
    after, _ = _remembered_colour_accuracy(model, held_out)
    assert after > 0.9, (before, after, seen)
    assert seen[-1] < seen[0]


def test_the_weight_must_be_finite_and_not_negative():
    with pytest.raises(ValueError, match="seen-loss must be finite and >= 0"):
        TrainConfig(seen_loss=-1.0)
    with pytest.raises(ValueError, match="seen-loss"):
        TrainConfig(seen_loss=float("inf"))


@pytest.mark.parametrize("agent", ["ppo", "impala"])
def test_both_learners_add_the_loss_they_report(agent):
    """One update of each learner reports the seen-so-far loss of the rollout before its step,
    as computed here from the model's logits and plainly looped targets; with weight 0 there
    is no such loss and the model needs no head."""
    from rlgate.agents.impala import IMPALA
    from rlgate.config import IMPALAConfig

    env = make_vec("rlgate/ActiveMatch-v0", 8, seed=2, delay=3)
    model = _model(env, True)
    rollout, _ = RolloutWorker(env, model, 32).collect()
    t_len = rollout.length
    with torch.no_grad():
        *_, logits = model.forward_seen(
            rollout.obs, rollout.prev_action, rollout.prev_reward, rollout.is_first,
            rollout.states[0],
        )  # fmt: skip
    present = model.channels_in_view({k: v[:t_len] for k, v in rollout.obs.items()})
    want = seen_loss(logits[:t_len], *seen_targets(present, rollout.is_first[:t_len]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if agent == "ppo":
        learner = PPO(model, PPOConfig(epochs=1, num_minibatches=1), 0.99, 1.0, opt, seen_coef=0.5)
    else:
        learner = IMPALA(model, IMPALAConfig(), 0.99, 1.0, opt, seen_coef=0.5)
    metrics = learner.update(rollout)
    assert metrics["seen"] == pytest.approx(float(want), rel=1e-5)
    plain = _model(env, False)
    cls = PPO if agent == "ppo" else IMPALA
    cfg = PPOConfig(epochs=1, num_minibatches=1) if agent == "ppo" else IMPALAConfig()
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    assert "seen" not in cls(plain, cfg, 0.99, 1.0, opt).update(rollout)
