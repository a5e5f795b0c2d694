"""Training throughput of this checkout against another commit, measured in the same run.

Usage:
    python scripts/bench_throughput.py --baseline 4bc5566            # MemoryS7, 1 thread
    python scripts/bench_throughput.py --baseline main --tasks MemoryS7 PassiveMatch(delay\\ 30) \\
        --steps 300000 --rounds 3 --threads 1 2

The baseline commit is checked out into a temporary git worktree, and its rlgate/, agents/ and
envs/ are laid out as one package on PYTHONPATH, ahead of this checkout's install. Each round
runs the same job (the task's recipe, as scripts/bench_train.py trains it, ``--steps`` env
steps, one process with ``--threads`` torch threads) first with one code and then the other,
alternating which goes first, so that both see the same machine; steps/s is env steps over the
wall time of the whole run. The table gives each round and the median ratio (this checkout /
baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_train import TASKS  # noqa: E402

from rlgate.benchmark import cpu_model, format_table  # noqa: E402
from rlgate.config import TrainConfig  # noqa: E402

JOB = """
import dataclasses, json, sys, time, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from rlgate.config import IMPALAConfig, PPOConfig, TrainConfig
from rlgate.runtime import tune_cpu_allocator
from rlgate.train import Trainer
tune_cpu_allocator()

def build(cls, data, defaults):
    # a field this code lacks is fine only where the config keeps its default
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data.keys() - names:
        if data[key] != defaults[key]:
            sys.exit(f"this code has no {key!r}, which the job sets to {data[key]!r}")
    return cls(**{k: v for k, v in data.items() if k in names})

cfg, defaults = spec["config"], spec["defaults"]
cfg["ppo"] = build(PPOConfig, cfg["ppo"], defaults["ppo"])
cfg["impala"] = build(IMPALAConfig, cfg["impala"], defaults["impala"])
cfg["env_option"] = tuple(cfg["env_option"])
cfg = build(TrainConfig, cfg, defaults)
t0 = time.perf_counter()
result = Trainer(cfg).run()
print(json.dumps({"sps": result.global_step / (time.perf_counter() - t0)}))
"""


def baseline_package(ref: str, into: Path) -> Path:
    """``ref`` checked out and laid out as the installed package would be; its path."""
    tree = into / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    pkg = into / "pkg" / "rlgate"
    shutil.copytree(tree / "rlgate", pkg)
    shutil.copytree(tree / "agents", pkg / "agents")
    shutil.copytree(tree / "envs", pkg / "envs")
    return pkg.parent


def run(spec: dict, pythonpath: str | None) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", JOB, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        cwd=spec["logdir"],
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["sps"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a git commit or branch to compare with")
    ap.add_argument("--tasks", nargs="+", default=["MemoryS7"], choices=list(TASKS))
    ap.add_argument("--core", default="ur-lstm")
    ap.add_argument("--steps", type=int, default=300_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    args = ap.parse_args(argv)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        base_path = str(baseline_package(args.baseline, tmp_path))
        try:
            for task in args.tasks:
                cfg = TrainConfig.from_recipe(
                    TASKS[task],
                    core=args.core,
                    total_timesteps=args.steps,
                    seed=1,
                    logdir=tmp,
                    progress=False,
                )
                for threads in args.threads:
                    spec = {
                        "config": cfg.to_dict(),
                        "defaults": TrainConfig().to_dict(),
                        "threads": threads,
                        "logdir": tmp,
                    }
                    ratios = []
                    for k in range(args.rounds):
                        order = [("this", None), ("baseline", base_path)]
                        sps = {}
                        for name, path in order if k % 2 == 0 else order[::-1]:
                            sps[name] = run(spec, path)
                        ratios.append(sps["this"] / sps["baseline"])
                        rows.append([task, threads, k + 1, f"{sps['baseline']:,.0f}",
                                     f"{sps['this']:,.0f}", f"{ratios[-1]:.3f}"])  # fmt: skip
                    summary.append((task, threads, statistics.median(ratios)))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp_path / "tree")],
                capture_output=True,
            )
    print(
        f"# bench_throughput: {cpu_model()}, core {args.core}, "
        f"{args.steps} steps a run, baseline {args.baseline}"
    )
    head = ["task", "threads", "round", "baseline steps/s", "this steps/s", "this / baseline"]
    print(format_table(head, rows))
    for task, threads, ratio in summary:
        print(f"{task}, {threads} thread(s): median ratio {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
