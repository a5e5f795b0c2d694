"""Reproduce the paper's RL comparison: cores x tasks x delays x seeds, then tables and figures.

Usage:
    python scripts/reproduce.py --preset small            # minutes: lstm vs ur-lstm, T-maze
    python scripts/reproduce.py --preset full             # 8 cores x 3 tasks x 3 delays x 3 seeds
    python scripts/reproduce.py --preset full --total-timesteps 2000000 --jobs 8
    python scripts/reproduce.py --preset full --report-only   # tables and plots from what ran
    python scripts/reproduce.py --preset active-match --out docs/results/active-match --add-reports
    python scripts/reproduce.py --preset popgym --jobs 2  # POPGym: 6 cores x 42 env-levels x 3

It is resumable: finished runs are skipped, so a killed sweep continues where it stopped; a
Grid preset's runs that were in flight continue from their last checkpoint (every 250k env
steps, and at Ctrl-C) as the same runs, POPGym's short runs start over. Writes, under --out
(default sweeps/{preset}): results/*.json (one per run), results.csv, results.md, curves_{task}.png,
success_vs_delay.png, gates.png (popgym: results.md with MMER per env and level, mmer.png,
normalised.png), and TensorBoard runs under tb/ (``tensorboard --logdir {out}/tb``). Needs
matplotlib (``pip install -e ".[repro]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlgate import popgym_report, sweep, sweep_report
from rlgate.popgym_suite import Suite


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(sweep.PRESETS), default="small")
    ap.add_argument("--out", default=None, help="default: sweeps/{preset}")
    ap.add_argument("--jobs", type=int, default=None, help="parallel runs (default: CPU cores)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (then --jobs 1 by default)")
    ap.add_argument("--num-envs", type=int, default=None, help="envs per run (raise on a GPU)")
    ap.add_argument("--total-timesteps", type=int, default=None, help="env steps per run")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 1..N")
    ap.add_argument(
        "--head-size", type=int, default=None, help="MLP heads for every core (0: linear)"
    )
    ap.add_argument("--report-only", action="store_true", help="only write tables and plots")
    ap.add_argument(
        "--add-reports",
        action="store_true",
        help="give finished runs without a task report one (the preset's report episodes), "
        "from their checkpoints under OUT/tb, then write tables and plots",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    grid = sweep.with_budget(sweep.PRESETS[args.preset], args.total_timesteps, args.seeds)
    grid = sweep.with_settings(grid, device=args.device)
    if args.num_envs is not None:
        grid = sweep.with_settings(grid, num_envs=args.num_envs)
    if args.head_size is not None:
        grid = sweep.with_settings(grid, head_size=args.head_size)
    out = Path(args.out or f"sweeps/{args.preset}")
    cuda = args.device.startswith("cuda")
    jobs = args.jobs or (1 if cuda else (os.cpu_count() or 1))
    if args.add_reports:
        if isinstance(grid, Suite) or not grid.report_episodes:
            print(f"reproduce: error: preset {args.preset} has no task report", file=sys.stderr)
            return 2
        added, missing = sweep.add_reports(grid, out)
        print(f"reproduce: added {added} reports" + (
            f"; no run folder for {len(missing)}: {', '.join(missing)}" if missing else ""
        ))  # fmt: skip
    elif not args.report_only:
        runs = len(grid.runs())
        if isinstance(grid, Suite):
            what = (
                f"{len(grid.env_names())} envs x {len(grid.levels)} levels, "
                f"{len(grid.seeds)} seeds) of {grid.budget():,}"
            )
        else:
            budgets = ", ".join(f"{task} {grid.budget(task):,}" for task in grid.delays)
            what = (
                f"{sum(len(d) for d in grid.delays.values())} task-delays, "
                f"{len(grid.seeds)} seeds) of {budgets}"
            )
        print(
            f"reproduce: {runs} runs ({len(grid.cores)} cores, {what} steps, "
            f"{jobs} at a time -> {out}"
        )
        try:
            ran = sweep.run_sweep(grid, out, jobs=jobs, progress=not args.no_progress)
        except sweep.SweepBusy as err:
            print(f"reproduce: error: {err}", file=sys.stderr)
            return 2
        print(f"reproduce: ran {ran}, skipped {runs - ran} finished runs")
    if isinstance(grid, Suite):
        done = popgym_report.report(grid, out)
        if done is None:
            print(f"reproduce: error: no results under {out}/results", file=sys.stderr)
            return 2
        paths, table = done
        print(table)
        print("wrote", *paths)
        return 0
    records = sweep_report.load_results(out)
    if not records:
        print(f"reproduce: error: no results under {out}/results", file=sys.stderr)
        return 2
    rows = sweep_report.summarize(records)
    after = sweep_report.run_table(records)
    pairs = sweep_report.pair_table(records)
    csv_path, md_path = sweep_report.write_tables(
        rows, out, sweep_report.describe(grid, records), after + ([""] if after else []) + pairs
    )
    plots = sweep_report.write_plots(records, out)
    print(md_path.read_text())
    for core in ("lstm", "ur-lstm"):
        print(
            f"{core}: share of saturated gates (g < 0.02 or > 0.98): "
            f"{sweep_report.saturation(records, core):.3f}"
        )
    print("wrote", csv_path, md_path, *plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
