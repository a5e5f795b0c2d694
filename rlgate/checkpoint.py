"""Checkpoints: written atomically (temp file + rename), holding model, optimizer, RNG states,
step counters, the envs' and the rollout's state between two updates, and the run's config.

A checkpoint holds tensors and plain Python data only (dicts, lists, tuples, numbers,
strings) and is read with ``torch.load(weights_only=True)``: loading one, say downloaded from
elsewhere, never runs code from it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A missing, unreadable or mismatched checkpoint (bad input: exit code 2 in the CLI)."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file."""
    p = Path(path)
    return p / CHECKPOINT if p.is_dir() else p


def write_atomic(path: str | os.PathLike, write) -> None:
    """Write a file atomically: ``write(f)`` fills a temp file beside ``path`` (binary), which
    is synced and renamed over ``path``; a reader sees the old file or the new one, and a
    failure leaves the old one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (``write_atomic``)."""
    write_atomic(path, lambda f: torch.save(payload, f))


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save``; CheckpointError if missing or unreadable."""
    p = checkpoint_path(path)
    if not p.is_file():
        raise CheckpointError(
            f"no checkpoint at {str(path)!r} (expected a run folder or a {CHECKPOINT} file)"
        )
    try:
        # weights_only: tensors and plain data only, so loading a checkpoint runs no code
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {err}") from None
    if not isinstance(data, dict) or "model" not in data or "config" not in data:
        raise CheckpointError(f"{str(p)!r} is not an rlgate checkpoint")
    return data


def check_compatible(saved: dict[str, Any], requested: dict[str, Any]) -> None:
    """CheckpointError naming the first model-defining field that differs."""
    from rlgate.config import TrainConfig

    # a field missing from an older checkpoint had its default then
    for name, default in TrainConfig.fixed_fields().items():
        old = saved.get(name, default)
        if old != requested.get(name, default):
            flag = name.replace("_", "-")
            raise CheckpointError(
                f"checkpoint was trained with --{flag} {old}, not "
                f"{requested.get(name)}: start a new run or resume with the same --{flag}"
            )
