"""Evaluate a checkpoint: run episodes with the trained policy, report success and return."""

from __future__ import annotations

from typing import Any

import torch

from rlgate import checkpoint as ckpt
from rlgate.agents.actor_critic import build_model
from rlgate.agents.rollout import RolloutWorker
from rlgate.config import CUSTOM_ENV, TrainConfig
from rlgate.envs import make_vec
from rlgate.envs.base import pick_device


def load_policy(path: str, num_envs: int, device: str, seed: int, env=None, make_env=None):
    """The checkpoint's config, its env (num_envs copies; ``env``, as ``rlgate.fit`` takes
    it, for a run trained on an env given in Python; ``make_env(cfg, device)`` for an env of
    another kind, as videos need) and its model in eval mode, and the device:
    (cfg, env, model, device)."""
    data = ckpt.load(path)
    cfg = TrainConfig.from_dict({**data["config"], "resume": None})
    dev = pick_device(device)
    if env is None and cfg.env == CUSTOM_ENV:
        raise ValueError(
            "this run trained on an env given in Python: evaluate it with "
            "rlgate.evaluate.evaluate(run, env=...)"
        )
    if make_env is not None:
        env = make_env(cfg, dev)
    else:
        env = make_vec(
            cfg.env if env is None else env, num_envs, device=dev, seed=seed, **cfg.env_options
        )
    model = build_model(cfg, env).to(dev)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as err:
        raise ckpt.CheckpointError(f"checkpoint does not fit its own config: {err}") from None
    model.eval()
    return cfg, env, model, dev


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

    def make_env(cfg, dev):
        return video.video_env(cfg.env, cfg.env_options, dev, seed)

    cfg, env, model, dev = load_policy(path, 1, device, seed, make_env=make_env)
    generator = torch.Generator(device=dev).manual_seed(seed)
    frames = video.record_episodes(env, model, episodes, generator, greedy)
    video.write_gif(frames, target)
    return {"env": cfg.env, "core": cfg.core, "episodes": episodes, "frames": len(frames),
            "path": str(target)}  # fmt: skip


@torch.no_grad()
def task_report(
    path: str,
    episodes: int = 1000,
    num_envs: int = 64,
    device: str = "auto",
    seed: int = 12345,
    greedy: bool = False,
) -> dict[str, Any]:
    """The task's own report on a checkpoint's policy, from the env's ``eval_report`` hook
    (``eval_report(model, episodes, generator, greedy) -> (result dict, lines to print)``;
    the Match tasks': ``rlgate.envs.match_report``).

    Returns:
        dict with env, core, the task's result and "lines", its printed form.
    """
    cfg, env, model, dev = load_policy(path, num_envs, device, seed)
    if not hasattr(env, "eval_report"):
        raise ValueError(
            f"--report: {cfg.env} has no report of its own (the Match tasks have one: "
            f"rlgate/PassiveMatch-v0, rlgate/ActiveMatch-v0)"
        )
    generator = torch.Generator(device=dev).manual_seed(seed)
    out, lines = env.eval_report(model, episodes, generator, greedy)
    return {"env": cfg.env, "core": cfg.core, **out, "lines": lines}
