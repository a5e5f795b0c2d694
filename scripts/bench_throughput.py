"""Training throughput of this checkout against another commit, measured in the same run.

Usage:
    python scripts/bench_throughput.py --baseline 4bc5566            # MemoryS7, 1 thread
    python scripts/bench_throughput.py --baseline main --tasks MemoryS7 PassiveMatch(delay\\ 30) \\
        --steps 300000 --rounds 3 --threads 1 2

The baseline commit is checked out into a temporary git worktree, and its rlgate/, agents/ and
envs/ are laid out as one package on PYTHONPATH, ahead of this checkout's install. Each round
runs the same job (the task's recipe from scripts/bench_train.py, ``--steps`` env steps, one
process with ``--threads`` torch threads) first with one code and then the other, alternating
which goes first, so that both see the same machine; steps/s is env steps over the wall time
of the whole run. The table gives each round and the median ratio (this checkout / baseline).
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

JOB = """
import json, sys, time, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from rlgate.config import PPOConfig, TrainConfig
from rlgate.runtime import tune_cpu_allocator
from rlgate.train import Trainer
tune_cpu_allocator()
r = spec["recipe"]
cfg = TrainConfig(env=spec["env"], env_option=tuple(spec["options"]), core=spec["core"],
    num_envs=r["num_envs"], unroll_length=r["unroll_length"], hidden_size=r["hidden_size"],
    encoder_size=r["hidden_size"], head_size=r["head_size"], view_gate=r["view_gate"],
    policy_init_gain=r["policy_init_gain"], reward_scale=r["reward_scale"],
    ppo=PPOConfig(ent_coef=r["ent_coef"], vf_coef=r["vf_coef"], epochs=r["epochs"],
        num_minibatches=r["num_minibatches"]), total_timesteps=spec["steps"],
    seed=1, logdir=spec["logdir"], progress=False)
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
                env_id, options, recipe = TASKS[task]
                for threads in args.threads:
                    spec = {
                        "env": env_id,
                        "options": list(options),
                        "core": args.core,
                        "recipe": recipe,
                        "steps": args.steps,
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
