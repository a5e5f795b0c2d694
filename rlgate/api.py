"""Train from Python on an env of your own: ``rlgate.fit(config, env=...)``."""

from __future__ import annotations

import dataclasses

from rlgate.config import CUSTOM_ENV, TrainConfig


def fit(config: TrainConfig | None = None, env=None):
    """Train an agent; the same job as ``rlgate train``.

    Args:
        config: the run's settings (default: ``TrainConfig()``).
        env: what to train on instead of ``config.env``: a function that returns a
            ``gymnasium.Env`` (``config.num_envs`` copies are stepped by a gymnasium
            ``SyncVectorEnv``), a ``gymnasium.vector.VectorEnv`` made with
            ``autoreset_mode=AutoresetMode.SAME_STEP`` (its own number of copies), or an
            rlgate batched env. The run's ``config.json`` then names the env "custom"; resume
            it with the same ``env``.

    Returns:
        ``rlgate.train.TrainResult`` (run folder, updates, env steps, per-update metrics).
    """
    from rlgate.train import Trainer

    cfg = config or TrainConfig()
    if env is not None:
        num_envs = getattr(env, "num_envs", cfg.num_envs)
        cfg = dataclasses.replace(cfg, env=CUSTOM_ENV, num_envs=num_envs)
    return Trainer(cfg, env=env).run()
