"""Evaluate a checkpoint: run episodes with the trained policy, report success and return."""

from __future__ import annotations

from typing import Any

import torch

from rlgate import checkpoint as ckpt
from rlgate.agents.rollout import RolloutWorker
from rlgate.config import TrainConfig
from rlgate.envs import make_vec
from rlgate.train import build_model, pick_device


@torch.no_grad()
def evaluate(
    path: str,
    episodes: int = 100,
    num_envs: int = 16,
    device: str = "auto",
    seed: int = 12345,
    greedy: bool = False,
) -> dict[str, Any]:
    """Run ``episodes`` episodes of the checkpoint's env with its policy.

    Returns:
        dict with env, core, episodes, success_rate and mean_return.
    """
    data = ckpt.load(path)
    cfg = TrainConfig.from_dict({**data["config"], "resume": None})
    dev = pick_device(device)
    env = make_vec(cfg.env, num_envs, device=dev, seed=seed, **cfg.env_options)
    model = build_model(cfg, env).to(dev)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as err:
        raise ckpt.CheckpointError(f"checkpoint does not fit its own config: {err}") from None
    model.eval()
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
        "success_rate": sum(successes) / len(successes),
        "mean_return": sum(returns) / len(returns),
    }
