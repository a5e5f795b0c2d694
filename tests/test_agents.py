"""The agents learn: PPO with ur-lstm and with lstm, and IMPALA, solve a short T-maze; the same
seed gives the same learning curve; the actor processes feed the learner."""

from __future__ import annotations

import pytest
import torch

from rlgate.agents.ppo import _sequences, categorical_ppo_loss, ppo_loss
from rlgate.config import IMPALAConfig, PPOConfig, TrainConfig
from rlgate.train import Trainer


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        env="rlgate/TMaze-v0",
        env_option=("length=4",),
        num_envs=32,
        unroll_length=32,
        # the default schedule: at a constant lr of 1e-3 PPO can unlearn the maze once it has
        # solved it (success 1.0, then 0.5), on any core
        anneal_lr=True,
        progress=False,
        logdir=str(tmp_path),
        seed=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _final_success(result, last: int = 5) -> float:
    values = [h["charts/success_rate"] for h in result.history if "charts/success_rate" in h]
    return sum(values[-last:]) / len(values[-last:])


@pytest.mark.parametrize("core", ["ur-lstm", "lstm"])
def test_ppo_learns_a_short_tmaze(tmp_path, core):
    result = Trainer(_cfg(tmp_path, core=core, total_timesteps=60_000)).run()
    assert _final_success(result) >= 0.9


@pytest.mark.gpu
@pytest.mark.parametrize("core", ["ur-lstm", "ur-gru"])
def test_ppo_learns_a_short_tmaze_on_the_gpu_with_everything_there(tmp_path, core):
    """The whole loop on the device: the env's tensors, the rollout and the model are CUDA
    tensors, and it learns as on the CPU."""
    trainer = Trainer(_cfg(tmp_path, core=core, total_timesteps=60_000, device="cuda"))
    rollout, _ = trainer.worker.collect()
    tensors = [*rollout.obs.values(), rollout.actions, rollout.logp, *rollout.states[0]]
    assert all(t.device.type == "cuda" for t in tensors)
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    assert _final_success(trainer.run()) >= 0.9


def test_impala_learns_a_short_tmaze(tmp_path):
    cfg = _cfg(
        tmp_path,
        agent="impala",
        core="ur-lstm",
        num_envs=16,
        unroll_length=16,
        learning_rate=2e-3,
        total_timesteps=160_000,
    )
    result = Trainer(cfg).run()
    assert _final_success(result, last=20) >= 0.9
    assert all(h["perf/policy_lag"] == 0 for h in result.history)  # synchronous mode


def test_same_seed_same_learning_curve(tmp_path):
    runs = []
    for name in ("a", "b", "c"):
        seed = 7 if name != "c" else 8
        cfg = _cfg(tmp_path, run_name=name, seed=seed, total_timesteps=4 * 1024)
        runs.append(
            [{k: v for k, v in h.items() if k != "perf/sps"} for h in Trainer(cfg).run().history]
        )
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_impala_actor_processes_feed_the_learner(tmp_path):
    cfg = _cfg(
        tmp_path,
        agent="impala",
        num_envs=8,
        unroll_length=16,
        total_timesteps=40 * 128,
        impala=IMPALAConfig(num_actors=2, envs_per_actor=8, queue_size=2),
    )
    result = Trainer(cfg).run()
    assert result.updates == 40
    lags = [h["perf/policy_lag"] for h in result.history]
    # actors act with lagged parameters (how much depends on scheduling: no upper bound here)
    assert min(lags) >= 0 and max(lags) > 0


def test_ppo_loss_clips_the_ratio():
    t_len, batch, actions = 3, 4, 5
    logits = torch.zeros(t_len, batch, actions, requires_grad=True)
    old_logp = torch.full((t_len, batch), -5.0)  # ratio = exp(log(1/5) + 5) >> 1 + clip
    adv = torch.ones(t_len, batch)
    adv[0, 0] = -1.0
    out = ppo_loss(
        torch.distributions.Categorical(logits=logits),
        torch.zeros(t_len, batch),
        torch.zeros(t_len, batch, dtype=torch.long),
        old_logp,
        adv,
        torch.zeros(t_len, batch),
        clip_coef=0.2,
    )
    assert out["clip_fraction"] == 1.0
    out["policy"].backward()
    # clipped positive advantages give no gradient; only the negative one pushes the logits
    assert logits.grad[0, 0].abs().sum() > 0 and logits.grad[1:].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("stats", [False, True])
def test_categorical_ppo_loss_matches_the_distributions_one(dtype, stats):
    """The Categorical loss with its gradient written out against ``ppo_loss`` through
    torch.distributions and autograd: every term and the gradients of the logits and values,
    for each weighting of the terms; ratios on both sides of the clip range and inside it,
    advantages of both signs, peaked and flat policies."""
    g = torch.Generator().manual_seed(0)
    t_len, batch, n_act = 6, 5, 7
    logits = torch.randn(t_len, batch, n_act, generator=g, dtype=dtype) * 3
    values = torch.randn(t_len, batch, generator=g, dtype=dtype)
    actions = torch.randint(0, n_act, (t_len, batch), generator=g)
    logp_now = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    # ratios from e^-0.5 to e^0.5: many beyond 1 +- 0.2, some inside
    old_logp = logp_now + (torch.rand(t_len, batch, generator=g, dtype=dtype) - 0.5)
    adv = torch.randn(t_len, batch, generator=g, dtype=dtype)
    returns = torch.randn(t_len, batch, generator=g, dtype=dtype)
    adv_stats = (adv.mean() + 0.3, adv.std() * 2) if stats else None
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for weights in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.5, -0.01)]:
        grads, outs = [], []
        for fused in (False, True):
            lg, v = logits.clone().requires_grad_(), values.clone().requires_grad_()
            args = (v, actions, old_logp, adv, returns, 0.2, adv_stats)
            if fused:
                out = categorical_ppo_loss(lg, *args)
            else:
                out = ppo_loss(torch.distributions.Categorical(logits=lg), *args)
            w_pol, w_val, w_ent = weights
            (w_pol * out["policy"] + w_val * out["value"] + w_ent * out["entropy"]).backward()
            grads.append((lg.grad, v.grad))
            outs.append(out)
        for key in outs[0]:
            torch.testing.assert_close(outs[1][key], outs[0][key], **tol)
        for fused_grad, plain_grad in zip(grads[1], grads[0]):
            torch.testing.assert_close(fused_grad, plain_grad, **tol)
    clipped = outs[0]["clip_fraction"]
    assert 0.2 < clipped < 0.9  # both branches were exercised


def test_sequences_keep_whole_chunks_of_one_env():
    x = torch.arange(12).view(6, 2)  # [T=6, B=2]: x[t, b] = 2t + b
    seq = _sequences(x, 3)  # [3, 4]: sequence c * B + b
    assert seq[:, 0].tolist() == [0, 2, 4] and seq[:, 1].tolist() == [1, 3, 5]
    assert seq[:, 2].tolist() == [6, 8, 10] and seq[:, 3].tolist() == [7, 9, 11]


def test_truncated_bptt_with_recomputed_states_runs(tmp_path):
    cfg = _cfg(
        tmp_path,
        total_timesteps=2 * 1024,
        ppo=PPOConfig(bptt=8, recompute_states=True, num_minibatches=8),
    )
    result = Trainer(cfg).run()
    assert result.updates == 2 and all(
        torch.isfinite(torch.tensor(h["losses/loss"])) for h in result.history
    )


def test_recomputed_chunk_states_are_a_step_by_step_unroll_with_the_current_parameters(tmp_path):
    """PPO's recomputed BPTT start states against the model stepped one step at a time over the
    rollout (resets included); the last chunk's steps are not run."""
    trainer = Trainer(_cfg(tmp_path, ppo=PPOConfig(bptt=8, recompute_states=True)))
    r, _ = trainer.worker.collect()
    trainer.learner.update(r)  # the parameters move away from the ones that acted
    model, calls = trainer.model, []
    forward = model.forward
    model.forward = lambda *a: calls.append(a[0]) or forward(*a)
    states = trainer.learner._chunk_states(r, 8)
    assert len(states) == 4 and len(calls) == 3
    with torch.no_grad():
        state = r.states[0]
        for t in range(32):
            if t % 8 == 0:
                for mine, want in zip(states[t // 8], state):
                    torch.testing.assert_close(mine, want)
            obs = {k: v[t] for k, v in r.obs.items()}
            step = (r.prev_action[t], r.prev_reward[t], r.is_first[t])
            state = model.step(obs, *step, state)[2]


def _minigrid_one_hot(image):
    """[..., 3] minigrid (object, colour, state) codes -> [..., 20] per-channel one-hot, written
    plainly with F.one_hot."""
    import torch.nn.functional as F

    from rlgate.agents.encoders import MINIGRID_CODES

    codes = image.long()
    return torch.cat([F.one_hot(codes[..., k], n) for k, n in enumerate(MINIGRID_CODES)], -1)


def test_minigrid_encoder_equals_a_linear_map_of_the_one_hot_codes():
    import torch.nn.functional as F

    from rlgate.agents.encoders import ObsEncoder
    from rlgate.envs import make_vec

    env = make_vec("rlgate/MemoryS7-v0", 4, seed=0)
    obs, _ = env.reset()
    obs = {k: v.unsqueeze(0) for k, v in obs.items()}  # T = 1
    enc = ObsEncoder(env.single_observation_space, 7, 16, env.observation_kinds)
    prev_a, prev_r = torch.tensor([[0, 3, 6, 2]]), torch.tensor([[0.0, 1.0, -2.0, 0.5]])
    one_hot = _minigrid_one_hot(obs["image"])
    extra = torch.cat(
        [
            F.one_hot(prev_a, 7).float(),
            (prev_r.sign() * prev_r.abs().log1p()).unsqueeze(-1),
            F.one_hot(obs["direction"].long(), 4).float(),
        ],
        -1,
    )
    expected = torch.relu(
        one_hot.reshape(1, 4, -1).float() @ enc.image.weight.t()
        + extra @ enc.extra.weight.t()
        + enc.extra.bias
    )
    out = enc.embed(enc.view(obs), obs, F.one_hot(prev_a, 7).float(), prev_r)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_ppo_with_mlp_heads_learns_a_short_tmaze(tmp_path):
    cfg = _cfg(tmp_path, core="ur-lstm", head_size=32, total_timesteps=60_000)
    trainer = Trainer(cfg)
    assert isinstance(trainer.model.policy, torch.nn.Sequential)
    # the heads see [core output, encoder features]
    assert trainer.model.policy[0].in_features == cfg.hidden_size + cfg.encoder_size
    assert _final_success(trainer.run()) >= 0.9


@pytest.mark.parametrize("env_id", ["rlgate/ActiveMatch-v0", "rlgate/MemoryS7-v0"])
@pytest.mark.parametrize("view_gate", [False, True])
def test_view_pool_adds_the_views_channel_counts_to_the_core_input(env_id, view_gate):
    """With view_pool the core's input is relu(extra + image map + pool map of the counts of
    each channel over the view's cells), written here from a plain one-hot and plain
    matmuls; with it off the model is unchanged (the same initial weights, the same input)."""
    from rlgate.agents.actor_critic import ActorCritic
    from rlgate.agents.encoders import MINIGRID_CODES, reward_feature
    from rlgate.envs import make_vec

    env = make_vec(env_id, 4, seed=3)
    obs, _ = env.reset()
    for _ in range(5):
        obs, *_ = env.step(torch.randint(0, env.num_actions, (4,)))
    obs = {k: v.unsqueeze(0) for k, v in obs.items()}

    def build(pool):
        torch.manual_seed(7)
        return ActorCritic(
            env.single_observation_space, env.single_action_space, "lstm", 16, 8, None,
            12, view_gate, observation_kinds=env.observation_kinds, view_pool=pool,
        )  # fmt: skip

    plain, pooled = build(False), build(True)
    shared = {k: v for k, v in pooled.state_dict().items() if "pool" not in k}
    assert shared.keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in shared.items())
    image = obs["image"]
    if image.shape[-1] == len(MINIGRID_CODES):
        one_hot = _minigrid_one_hot(image).float()
    else:
        one_hot = image.float()
    cells = one_hot.reshape(1, 4, -1, one_hot.shape[-1])  # [T, B, cells, channels]
    prev_a = torch.randint(0, env.num_actions, (1, 4))
    prev_r = torch.randn(1, 4)
    enc = pooled.encoder
    parts = [
        torch.nn.functional.one_hot(prev_a, env.num_actions).float(),
        reward_feature(prev_r)[..., None],
    ]
    if "direction" in obs:  # MemoryS7's other entry: a one-hot beside them
        parts.append(torch.nn.functional.one_hot(obs["direction"].long(), 4).float())
    extra_in = torch.cat(parts, -1)
    want = torch.relu(
        extra_in @ enc.extra.weight.T + enc.extra.bias
        + cells.flatten(-2) @ enc.image.weight.T
        + cells.sum(-2) @ enc.pool.weight.T
    )  # fmt: skip
    got = pooled.core_features(obs, prev_a, prev_r)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    off = plain.core_features(obs, prev_a, prev_r)
    assert not torch.allclose(off, got)  # the counts do reach the core


@pytest.mark.parametrize("env_id", ["rlgate/PassiveMatch-v0", "rlgate/MemoryS7-v0"])
def test_view_gate_gates_the_views_channels_by_the_core_output(env_id):
    """The heads see [core output, view x gate] and not the encoder features, the gate one
    sigmoid per channel of the view's per-cell one-hot, computed from the core output: a gate
    rigged open on one channel only leaves exactly the cells holding that channel's value."""

    from rlgate.agents.actor_critic import ActorCritic
    from rlgate.agents.encoders import MINIGRID_CODES
    from rlgate.envs import make_vec

    env = make_vec(env_id, 3, seed=2)
    obs, _ = env.reset()
    for _ in range(3):
        obs, *_ = env.step(torch.randint(0, env.num_actions, (3,)))
    obs = {k: v.unsqueeze(0) for k, v in obs.items()}  # T = 1
    model = ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        "lstm",
        16,
        8,
        None,
        12,
        True,
        observation_kinds=env.observation_kinds,
    )
    if obs["image"].shape[-1] == len(MINIGRID_CODES):
        one_hot = _minigrid_one_hot(obs["image"]).float()
    else:
        one_hot = obs["image"].float()
    channels = one_hot.shape[-1]
    assert model.gate.out_features == channels
    open_channel = channels - 1
    with torch.no_grad():
        model.gate.weight.zero_()
        model.gate.bias.fill_(-100.0)
        model.gate.bias[open_channel] = 100.0
    seen = {}
    model.policy[0].register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    zeros = torch.zeros(1, 3, dtype=torch.long)
    model(obs, zeros, zeros.float(), zeros.bool(), model.initial_state(3))
    assert seen["x"].shape[-1] == 16 + one_hot[0, 0].numel()
    gated = seen["x"][..., 16:]
    expected = torch.zeros_like(one_hot)
    expected[..., open_channel] = one_hot[..., open_channel]
    torch.testing.assert_close(gated, expected.reshape(1, 3, -1), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="view_gate needs head_size > 0"):
        ActorCritic(
            env.single_observation_space, env.single_action_space, "lstm", 16, 8, None, 0, True
        )


@pytest.mark.parametrize("view_gate", [False, True])
def test_stacked_mlp_heads_are_the_heads_run_one_by_one(view_gate):
    """The MLP heads run as one stacked first layer and a block-diagonal last one; with a
    forward hook on a head the modules run one by one: the same outputs and gradients."""
    from rlgate.agents.actor_critic import ActorCritic
    from rlgate.envs import make_vec

    env = make_vec("rlgate/PassiveMatch-v0", 5, seed=3)
    obs, _ = env.reset()
    steps = []
    for _ in range(6):
        steps.append(obs)
        obs, *_ = env.step(torch.randint(0, env.num_actions, (5,)))
    obs = {k: torch.stack([o[k] for o in steps]) for k in steps[0]}  # [6, 5, ...]
    torch.manual_seed(0)
    model = ActorCritic(
        env.single_observation_space,
        env.single_action_space,
        "ur-lstm",
        16,
        8,
        None,
        12,
        view_gate,
        policy_init_gain=1.0,
        observation_kinds=env.observation_kinds,
    )
    actions = torch.randint(0, env.num_actions, (6, 5))
    rewards, first = torch.rand(6, 5), torch.rand(6, 5) < 0.2

    def run():
        model.zero_grad(set_to_none=True)
        params, values, _ = model(obs, actions, rewards, first, model.initial_state(5))
        (params.square().sum() + values.sin().sum()).backward()
        return params.detach(), values.detach(), [p.grad.clone() for p in model.parameters()]

    stacked = run()
    handle = model.value[0].register_forward_hook(lambda m, args, out: None)
    one_by_one = run()
    handle.remove()
    assert stacked[0].shape == (6, 5, env.num_actions) and stacked[1].shape == (6, 5)
    torch.testing.assert_close(stacked[0], one_by_one[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stacked[1], one_by_one[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(stacked[2], one_by_one[2]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_ppo_with_a_view_gate_learns_a_short_tmaze(tmp_path):
    cfg = _cfg(
        tmp_path,
        core="ur-lstm",
        head_size=32,
        view_gate=True,
        policy_init_gain=1.0,
        total_timesteps=60_000,
    )
    assert _final_success(Trainer(cfg).run()) >= 0.9


def test_checkpoints_from_before_head_size_resume_with_linear_heads():
    from rlgate import checkpoint as ckpt

    old = {k: v for k, v in TrainConfig().to_dict().items() if k != "head_size"}
    ckpt.check_compatible(old, TrainConfig().to_dict())
    with pytest.raises(ckpt.CheckpointError, match="--head-size 0, not 32"):
        ckpt.check_compatible(old, TrainConfig(head_size=32).to_dict())
    # likewise --view-gate: checkpoints from before it had no gate
    old = {k: v for k, v in TrainConfig(head_size=8).to_dict().items() if k != "view_gate"}
    ckpt.check_compatible(old, TrainConfig(head_size=8).to_dict())
    with pytest.raises(ckpt.CheckpointError, match="--view-gate False, not True"):
        ckpt.check_compatible(old, TrainConfig(head_size=8, view_gate=True).to_dict())


@pytest.mark.parametrize("agent", ["ppo", "impala"])
def test_reward_scale_equals_scaled_rewards(agent):
    """--reward-scale s trains exactly as if the env paid s times its rewards (one update from
    the same rollout and parameters), and s = 1 changes nothing."""
    import dataclasses

    from rlgate.agents.impala import IMPALA
    from rlgate.agents.ppo import PPO
    from rlgate.agents.rollout import RolloutWorker
    from rlgate.envs import make_vec
    from rlgate.train import build_model

    torch.manual_seed(0)
    cfg = TrainConfig(
        env="rlgate/PassiveMatch-v0", num_envs=8, unroll_length=20, hidden_size=8, encoder_size=8
    )
    env = make_vec(cfg.env, cfg.num_envs, seed=3, delay=3)
    model = build_model(cfg, env)
    worker = RolloutWorker(
        env, model, cfg.unroll_length, generator=torch.Generator().manual_seed(5)
    )
    rollout, _ = worker.collect()
    assert rollout.rewards.abs().sum() > 0  # apples were eaten: the scale has work to do
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def update(scale, rewards):
        model.load_state_dict(start)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if agent == "ppo":
            learner = PPO(model, PPOConfig(epochs=1, num_minibatches=1), 0.9, 1e9, opt, None, scale)
        else:
            learner = IMPALA(model, IMPALAConfig(), 0.9, 1e9, opt, None, scale)
        learner.update(dataclasses.replace(rollout, rewards=rewards), torch.Generator())
        return [p.detach().clone() for p in model.parameters()]

    scaled = update(2.5, rollout.rewards)
    for a, b in zip(scaled, update(1.0, rollout.rewards * 2.5)):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(scaled, update(1.0, rollout.rewards)))


def test_choice_probe_labels_are_the_way_to_the_cue_square(capsys):
    """scripts/probe_choice.py's labels, read off the choice room's grid: left, up or right as
    the cue's colour stands left of, above or right of the agent; and the script runs."""
    import importlib.util
    from pathlib import Path

    from rlgate.envs import make_vec
    from rlgate.envs.grid import COLOUR

    path = Path(__file__).parents[1] / "scripts" / "probe_choice.py"
    spec = importlib.util.spec_from_file_location("probe_choice", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    env = make_vec("rlgate/PassiveMatch-v0", 16, seed=3, delay=2)
    obs, prev_a, prev_r, way = probe.episodes(env, env.cue_steps + 3, torch.Generator())
    assert obs["image"].shape[:2] == prev_a.shape == prev_r.shape == (env.cue_steps + 3, 16)
    for b in range(16):
        grid, col = env.state["grid"][b], int(env.state["pos"][b, 1])
        _, c = (grid == COLOUR + env.state["cue"][b]).nonzero()[0].tolist()
        expected = 0 if c == col else (3 if c < col else 1)  # up, left, right
        assert int(way[b]) == expected
    assert probe.main(["--steps", "2", "--every", "1", "--batch", "4", "--delay", "1"]) == 0
    table = capsys.readouterr().out.splitlines()[-4:]
    assert [row.split("|")[1].strip() for row in table] == list(probe.VARIANTS)


def test_unroll_gates_replays_the_core_with_its_resets():
    """The gates of every step of an unroll, against the core's own sequence forward (which
    takes the resets inside) run up to that step."""
    from rlgate.agents.actor_critic import build_model
    from rlgate.agents.rollout import RolloutWorker
    from rlgate.config import TrainConfig
    from rlgate.envs import make_vec

    cfg = TrainConfig(env="rlgate/TMaze-v0", env_option=("length=2",), core="ur-lstm")
    env = make_vec(cfg.env, 4, seed=0, length=2)
    torch.manual_seed(0)
    model = build_model(cfg, env)
    r, _ = RolloutWorker(env, model, 12, generator=torch.Generator().manual_seed(0)).collect()
    assert bool(r.is_first[1:12].any())  # episodes of a few steps: resets inside the unroll
    gates = model.unroll_gates(r)
    x = model.core_features(
        {k: v[:12] for k, v in r.obs.items()}, r.prev_action[:12], r.prev_reward[:12]
    )
    init = model.initial_state(4, "cpu")
    with torch.no_grad():
        for t in (0, 3, 7, 11):
            if t:
                _, state = model.core(x[:t], r.states[0], r.is_first[:t])
            else:
                state = r.states[0]
            first = r.is_first[t].unsqueeze(-1)
            state = tuple(torch.where(first, s0, s) for s0, s in zip(init, state))
            expected = model.core.gates(x[t], state)
            for key in expected:
                torch.testing.assert_close(gates[t][key], expected[key])


@pytest.mark.parametrize(
    "env_id, device",
    [
        ("rlgate/PassiveMatch-v0", "cpu"),
        ("CartPole-v1", "cpu"),
        pytest.param("rlgate/PassiveMatch-v0", "cuda", marks=pytest.mark.gpu),
    ],
)
def test_a_rollouts_episode_statistics_are_the_envs_in_order(env_id, device):
    """The statistics a rollout returns against the env itself replayed with the rollout's
    actions: every ended episode's values, in the order (step, then copy) they ended."""
    from rlgate.agents.actor_critic import build_model
    from rlgate.agents.rollout import RolloutWorker
    from rlgate.envs import make_vec

    options = {"delay": 2} if "Match" in env_id else {}
    cfg = TrainConfig(env=env_id, num_envs=8, unroll_length=64, progress=False)
    env = make_vec(env_id, 8, device=device, seed=5, **options)
    model = build_model(cfg, env).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    worker = RolloutWorker(env, model, 64, generator=gen)
    r, log = worker.collect()
    assert r.actions.device.type == device and all(
        v.device.type == "cpu" for v in log.stats.values()
    )
    replay = make_vec(env_id, 8, device=device, seed=5, **options)
    replay.reset()
    want: dict[str, list[float]] = {}
    for t in range(64):
        *_, info = replay.step(model.action_dist.env_action(r.actions[t]))
        for b in range(8):
            if info["done"][b]:
                for k, v in info["episode"].items():
                    want.setdefault(k, []).append(float(v[b]))
    assert log.count == len(want["return"]) > 0
    assert set(log.stats) == set(want)
    for k, values in want.items():
        torch.testing.assert_close(log.stats[k], torch.tensor(values), equal_nan=True)


def test_native_categorical_ppo_loss_first_ratio_and_bad_actions():
    """The native loss (CPU float32) sees acting's log-probabilities exactly: with old log-probs
    from ``log_softmax_columns`` every ratio is 1, so the KL and clip fraction are 0 and the
    policy loss is minus the mean normalised advantage; an action outside the policy's range
    is refused, not read out of bounds."""
    from rlgate.agents.distributions import log_softmax_columns
    from rlgate.agents.ppo import _native_loss_applies

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(64, 16, 5, generator=g)
    actions = torch.randint(0, 5, (64, 16), generator=g)
    old_logp = log_softmax_columns(logits).gather(0, actions.reshape(1, -1)).reshape(64, 16)
    adv, values, returns = (torch.randn(64, 16, generator=g) for _ in range(3))
    flat = [t.reshape(-1) for t in (values, actions, old_logp, adv, returns)]
    assert _native_loss_applies(logits.reshape(-1, 5), *flat)
    out = categorical_ppo_loss(logits, values, actions, old_logp, adv, returns, 0.2)
    assert out["approx_kl"].item() == 0.0 and out["clip_fraction"].item() == 0.0
    norm = (adv - adv.mean()) / (adv.std() + 1e-8)
    torch.testing.assert_close(out["policy"], -norm.mean(), rtol=0, atol=1e-6)
    bad = actions.clone()
    bad[3, 4] = 5
    with pytest.raises(ValueError, match="outside"):
        categorical_ppo_loss(logits, values, bad, old_logp, adv, returns, 0.2)
