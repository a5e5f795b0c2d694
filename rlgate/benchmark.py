"""Timing helpers for the benchmark scripts: interleaved rounds, medians, plain tables.

Machines here are shared and noisy, so every case of a table is timed round-robin in the
same rounds as its baseline, and tables report ratios to that baseline.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    cases: dict[str, Callable[[], object]],
    rounds: int = 5,
    device: torch.device | str | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Time each case once per round, round-robin, after one warm-up call each.

    Returns:
        (median milliseconds per case, first-call milliseconds per case); the first call
        includes any one-time cost (compilation, autotuning, allocation).
    """
    first: dict[str, float] = {}
    for name, fn in cases.items():
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        first[name] = (time.perf_counter() - t0) * 1e3
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return {n: statistics.median(s) for n, s in samples.items()}, first


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table with right-aligned columns."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for table headers."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
