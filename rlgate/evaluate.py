"""Evaluate a checkpoint: run episodes with the trained policy, report success and return."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rlgate import checkpoint as ckpt
from rlgate.agents.actor_critic import build_model
from rlgate.agents.rollout import RolloutWorker
from rlgate.config import CUSTOM_ENV, TrainConfig
from rlgate.envs import make_vec
from rlgate.envs.base import pick_device


def load_policy(path: str, num_envs: int, device: str, seed: int, env=None):
    """The checkpoint's config, its env (num_envs copies; ``env``, as ``rlgate.fit`` takes
    it, for a run trained on an env given in Python) and its model in eval mode, and the
    device: (cfg, env, model, device)."""
    data = ckpt.load(path)
    cfg = TrainConfig.from_dict({**data["config"], "resume": None})
    dev = pick_device(device)
    if env is None and cfg.env == CUSTOM_ENV:
        raise ValueError(
            "this run trained on an env given in Python: evaluate it with "
            "rlgate.evaluate.evaluate(run, env=...)"
        )
    env = make_vec(
        cfg.env if env is None else env, num_envs, device=dev, seed=seed, **cfg.env_options
    )
    return cfg, env, _load_model(cfg, env, data, dev), dev


def _load_model(cfg: TrainConfig, env, data: dict[str, Any], dev):
    """The checkpoint's model for ``env``, in eval mode on ``dev``."""
    model = build_model(cfg, env).to(dev)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as err:
        raise ckpt.CheckpointError(f"checkpoint does not fit its own config: {err}") from None
    model.eval()
    return model


@torch.no_grad()
def evaluate(
    path: str,
    episodes: int = 100,
    num_envs: int = 16,
    device: str = "auto",
    seed: int = 12345,
    greedy: bool = False,
    env=None,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of the checkpoint's env (or ``env``) with its policy.

    Returns:
        dict with env, core, episodes, success_rate (NaN for an env that reports no
        success) and mean_return.
    """
    cfg, env, model, dev = load_policy(path, num_envs, device, seed, env)
    worker = RolloutWorker(
        env, model, 64, generator=torch.Generator(device=dev).manual_seed(seed), greedy=greedy
    )
    returns, successes = [], []
    while len(returns) < episodes:
        _, log = worker.collect()
        if log.count:
            returns += log.stats["return"].tolist()
            successes += log.stats["success"].tolist()
    returns, successes = returns[:episodes], successes[:episodes]
    return {
        "env": cfg.env,
        "core": cfg.core,
        "episodes": len(returns),
        "success_rate": float(torch.tensor(successes).nanmean()),
        "mean_return": sum(returns) / len(returns),
    }


def record_video(
    path: str,
    out: str,
    episodes: int = 3,
    device: str = "auto",
    seed: int = 12345,
    greedy: bool = False,
) -> dict[str, Any]:
    """Play ``episodes`` episodes of the checkpoint's env with its policy and write them to
    ``out`` (an animated GIF, which must not exist yet).

    Returns:
        dict with env, core, episodes, frames and the path written.
    """
    from rlgate import video

    target = video.check_video_path(out)
    data = ckpt.load(path)
    cfg = TrainConfig.from_dict({**data["config"], "resume": None})
    if cfg.env == CUSTOM_ENV:
        raise ValueError("this run trained on an env given in Python: no env id to film")
    dev = pick_device(device)
    env = video.video_env(cfg.env, cfg.env_options, dev, seed)
    model = _load_model(cfg, env, data, dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    frames = video.record_episodes(env, model, episodes, generator, greedy)
    video.write_gif(frames, target)
    return {"env": cfg.env, "core": cfg.core, "episodes": episodes, "frames": len(frames),
            "path": str(target)}  # fmt: skip


def probe_accuracy(features: Tensor, labels: Tensor, num_classes: int, steps: int = 300) -> float:
    """Held-out accuracy of a linear probe: softmax regression of ``labels`` [N] (long, in
    0..num_classes-1) from ``features`` [N, D], fit by full-batch Adam on the first half
    (features standardised with that half's statistics, weights starting at zero, so the
    result is deterministic) and scored on the second half. NaN with fewer than 2 samples."""
    n = labels.shape[0] // 2
    if n == 0:
        return float("nan")
    x = features.float()
    x = (x - x[:n].mean(0)) / (x[:n].std(0, unbiased=False) + 1e-6)
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(x[:n] @ weight + bias, labels[:n])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        guess = (x[n:] @ weight + bias).argmax(-1)
    return float((guess == labels[n:]).float().mean())


@torch.no_grad()
def choice_report(
    path: str,
    episodes: int = 1000,
    num_envs: int = 64,
    device: str = "auto",
    seed: int = 12345,
    greedy: bool = False,
) -> dict[str, Any]:
    """Where a Match agent's choices go right or wrong.

    Runs ``episodes`` episodes and splits their success by the cue's colour and by the
    position of the cue's square in the choice room (0 = leftmost), and averages the policy's
    action probabilities at the first step of the choice phase per position. A policy that
    remembers the colour but has stopped exploring one side shows it here: success 1 at one
    position and 1/2 at the others, with near-deterministic first actions.

    Returns:
        dict with env, core, episodes, success_rate, by_colour and by_position ({index:
        (success rate, episodes)}), by_colour_and_position ({(colour, position): (success
        rate, episodes)}: a policy learns these cases one or two at a time), first_action
        ({position: mean probabilities [A]}) and, for a model with --view-gate, gate ({cue
        colour: the mean gate per view channel [channels] at the first choice step}: a gate
        that attends to the remembered colour opens that colour's channel and closes the
        other colours'; empty without the gate), and memory: the held-out accuracy of a
        linear probe (``probe_accuracy``) that reads the cue's colour from the core output at
        the first choice step (chance 1/num_colours). It separates the two ways to fail: a
        run stuck at chance with memory near chance has not learned to remember the cue;
        with memory near 1 it remembers and has not learned to use it.
    """
    from rlgate.envs.match import CHOICE, MatchEnv

    cfg, env, model, dev = load_policy(path, num_envs, device, seed)
    if not isinstance(env, MatchEnv):
        raise ValueError(
            f"--choices needs a Match task (rlgate/PassiveMatch-v0, rlgate/ActiveMatch-v0); "
            f"the checkpoint's env is {cfg.env}"
        )
    generator = torch.Generator(device=dev).manual_seed(seed)
    obs, info = env.reset()
    first = info["is_first"]
    prev_action = torch.zeros(num_envs, dtype=torch.long, device=dev)
    prev_reward = torch.zeros(num_envs, device=dev)
    state = model.initial_state(num_envs, dev)
    st = env.state
    # each copy's episode as drawn at its start (auto-reset redraws them when it ends)
    cue, target = st["cue"].clone(), st["cue_position"].clone()
    colour_ok, position_ok = [], []  # (key, success) per finished episode
    first_probs: dict[int, list[Tensor]] = {}
    first_gates: dict[int, list[Tensor]] = {}
    gate_out: list[Tensor] = []
    core_out: list[Tensor] = []
    memory_x: list[Tensor] = []
    memory_y: list[int] = []
    model.core.register_forward_hook(lambda m, args, out: core_out.append(out[0]))
    if model.view_gate:
        model.gate.register_forward_hook(lambda m, args, out: gate_out.append(out))
    while len(colour_ok) < episodes:
        logits, _, state = model(
            {k: v[None] for k, v in obs.items()},
            prev_action[None],
            prev_reward[None],
            first[None],
            state,
        )
        probs = torch.softmax(logits[0], dim=-1)  # the Match tasks' actions are Discrete
        starting = ((st["phase"] == CHOICE) & (st["t_phase"] == 0)).nonzero().squeeze(1)
        for b in starting.tolist():
            first_probs.setdefault(int(target[b]), []).append(probs[b].cpu())
            memory_x.append(core_out[-1][0, b].cpu())
            memory_y.append(int(cue[b]))
            if gate_out:
                gate = torch.sigmoid(gate_out[-1][0, b]).cpu()
                first_gates.setdefault(int(cue[b]), []).append(gate)
        gate_out.clear()
        core_out.clear()
        action = model.action_dist.sample(logits[0], generator, greedy)
        obs, reward, _, _, info = env.step(action)
        done = info["done"]
        for b in done.nonzero().squeeze(1).tolist():
            ok = float(info["episode"]["success"][b])
            colour_ok.append((int(cue[b]), ok))
            position_ok.append((int(target[b]), ok))
        cue = torch.where(done, st["cue"], cue)
        target = torch.where(done, st["cue_position"], target)
        first = info["is_first"]
        prev_action = torch.where(first, 0, action)
        prev_reward = torch.where(first, 0.0, reward)

    def split(pairs):
        groups: dict[Any, list[float]] = {}
        for key, ok in pairs[:episodes]:
            groups.setdefault(key, []).append(ok)
        return {k: (sum(v) / len(v), len(v)) for k, v in sorted(groups.items())}

    return {
        "env": cfg.env,
        "core": cfg.core,
        "episodes": episodes,
        "success_rate": sum(ok for _, ok in colour_ok[:episodes]) / episodes,
        "by_colour": split(colour_ok),
        "by_position": split(position_ok),
        "by_colour_and_position": split(
            [((c, p), ok) for (c, ok), (p, _) in zip(colour_ok, position_ok)]
        ),
        "first_action": {
            k: torch.stack(v).mean(0).tolist() for k, v in sorted(first_probs.items())
        },
        "gate": {k: torch.stack(v).mean(0).tolist() for k, v in sorted(first_gates.items())},
        "memory": probe_accuracy(torch.stack(memory_x), torch.tensor(memory_y), env.num_colours)
        if memory_x
        else float("nan"),
    }
