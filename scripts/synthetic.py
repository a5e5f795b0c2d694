"""The paper's synthetic memory tasks (Copy, Adding) on rlgate's cores: a resumable sweep over
cores x lags x seeds, then its table and figures (``rlgate.synthetic``).

Usage:
    python scripts/synthetic.py --preset small                 # minutes: lstm vs ur-lstm
    python scripts/synthetic.py --preset full --out docs/results/synthetic --jobs 2
    python scripts/synthetic.py --preset full --cores lstm ur-lstm --hidden-size 128
    python scripts/synthetic.py --preset full --report-only
    python scripts/synthetic.py --preset copy-long --out docs/results/synthetic-copy-long

Every run trains one core on one task at one lag with the same sizes and optimiser (flags
override them for every run). Finished runs write results/{run}.json and are skipped when the
sweep runs again; results.md, accuracy_vs_lag.png, curves_{task}-L{lag}.png and gates.png are
written from whatever has finished. Needs matplotlib (``pip install -e ".[repro]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from rlgate import sweep, synthetic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(synthetic.PRESETS), default="small")
    ap.add_argument("--out", default=None, help="default: sweeps/synthetic-{preset}")
    ap.add_argument("--jobs", type=int, default=None, help="parallel runs (default: CPU cores)")
    ap.add_argument("--cores", nargs="+", default=None)
    ap.add_argument("--seeds", type=int, default=None, help="seeds 1..N")
    ap.add_argument("--steps", type=int, default=None, help="training steps of every task")
    for name in ("hidden_size", "batch_size", "learning_rate", "max_grad_norm", "backend"):
        kind = float if name in ("learning_rate", "max_grad_norm") else int
        kind = str if name == "backend" else kind
        ap.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    grid = synthetic.PRESETS[args.preset]
    try:
        if args.cores:
            grid = replace(grid, cores=tuple(args.cores))
        if args.seeds:
            grid = replace(grid, seeds=tuple(range(1, args.seeds + 1)))
        if args.steps:
            grid = replace(grid, steps=dict.fromkeys(grid.steps, args.steps))
        names = ("hidden_size", "batch_size", "learning_rate", "max_grad_norm", "backend")
        changes = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
        grid = replace(grid, settings={**grid.settings, **changes})
        for run in grid.runs():  # every run's config is valid before anything runs
            grid.config(run)
    except ValueError as err:
        print(f"synthetic: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or f"sweeps/synthetic-{args.preset}")
    if not args.report_only:
        jobs = args.jobs or os.cpu_count() or 1
        print(f"synthetic: {len(grid.runs())} runs, {jobs} at a time -> {out}")
        (out / "results").mkdir(parents=True, exist_ok=True)
        try:
            ran = sweep.run_sweep(grid, out, jobs=jobs, progress=not args.no_progress)
        except sweep.SweepBusy as err:
            print(f"synthetic: error: {err}", file=sys.stderr)
            return 2
        print(f"synthetic: ran {ran}, skipped {len(grid.runs()) - ran} finished runs")
    records = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    if not records:
        print(f"synthetic: error: no results under {out}/results", file=sys.stderr)
        return 2
    paths = synthetic.write_report(records, out)
    print(paths[0].read_text())
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
