"""Run folders: one per run, created atomically, never shared or overwritten."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

from rlgate import checkpoint as ckpt
from rlgate.config import TrainConfig


def run_name_for(cfg: TrainConfig) -> str:
    """The default run folder name: {env}__{agent}__{core}__s{seed}__{unix seconds}."""
    env = re.sub(r"[^A-Za-z0-9._=+-]", "-", cfg.env)
    return f"{env}__{cfg.agent}__{cfg.core}__s{cfg.seed}__{int(time.time())}"


def create_run_dir(cfg: TrainConfig) -> Path:
    """Create the run's folder (or find the resumed run's) and return it.

    A new folder is made atomically (``mkdir`` fails where one exists), so two runs never share
    one: a default name taken by a run started in the same second gets a suffix -2, -3, ...;
    an explicit ``run_name`` that exists is refused (resume it instead). ValueError names the
    problem where ``logdir`` can't hold run folders.
    """
    if cfg.resume is not None:
        return ckpt.checkpoint_path(cfg.resume).parent
    logdir = Path(cfg.logdir)
    if logdir.exists() and not logdir.is_dir():
        raise ValueError(f"--logdir {cfg.logdir!r} is a file, not a folder for run folders")
    try:
        logdir.mkdir(parents=True, exist_ok=True)
        if cfg.run_name is not None:
            path = logdir / cfg.run_name
            try:
                path.mkdir()
            except FileExistsError:
                raise ValueError(
                    f"run folder {str(path)!r} exists: continue it with --resume {path}, or "
                    f"pick another --run-name"
                ) from None
            return path
        base = run_name_for(cfg)
        for k in itertools.count(1):
            path = logdir / (base if k == 1 else f"{base}-{k}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as err:
        raise ValueError(
            f"--logdir {cfg.logdir!r} can't hold run folders: {err.strerror or err}"
        ) from None
    raise AssertionError("unreachable")
