"""What every sweep's run records of where it came from, the threads it runs on, and where
its result goes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from rlgate.checkpoint import write_atomic


def sweep_threads() -> None:
    """torch threads of a sweep's run: $RLGATE_SWEEP_THREADS, default 1 (runs go in parallel)."""
    torch.set_num_threads(max(1, int(os.environ.get("RLGATE_SWEEP_THREADS", "1"))))


#: the folders whose uncommitted changes make a run's provenance "dirty"
CODE_DIRS = ("rlgate", "agents", "envs")


def provenance() -> dict[str, Any]:
    """Where a run's result came from: the checkout's git commit (None outside a git checkout)
    and whether the code that trains (rlgate/, agents/, envs/) had uncommitted changes, torch's
    version and the run's thread count. A sweep resumed over several checkouts can then say
    which commit produced which runs."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = (
        git("status", "--porcelain", "--untracked-files=no", "--", *CODE_DIRS) if commit else None
    )
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def write_result(out: Path, name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write a finished run's ``record`` to ``{out}/results/{name}.json`` atomically (a sweep
    skips the runs that have one); returns the record."""
    path = Path(out) / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record).encode()
    write_atomic(path, lambda f: f.write(text))
    return record
