"""Scale-out benchmark: env steps per second of one training job on 1, 2, ... processes.

Usage:
    python scripts/bench_scale.py                       # CPU: 1 and 2 processes
    python scripts/bench_scale.py --nproc 1 2 4 --device cuda --num-envs 256   # per GPU

Each case is a real ``torchrun --standalone --nproc-per-node N -m rlgate train`` job (gloo on CPU,
NCCL on CUDA; ``--num-envs`` is per process, so N processes step N times the envs). The rate is
the job's own steps per second of training (envs, rollouts, all-reduced updates), printed by
rank 0, so process start-up is not counted. Cases run in interleaved rounds and the table gives
the median and the ratio to one process measured in the same rounds. "threads" is torch's
intra-op threads per process (torchrun sets OMP_NUM_THREADS=1 for N > 1 unless told).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile

import torch

from rlgate.benchmark import format_table

RATE = re.compile(r"rlgate: done: (\d+) steps \(([\d.]+)/s\)")


def run_job(nproc: int, threads: int, args, logdir: str, name: str) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}", "-m", "rlgate", "train"]
    cmd += ["--env", args.env, "--agent", args.agent, "--core", args.core]
    cmd += ["--num-envs", str(args.num_envs), "--unroll-length", str(args.unroll_length)]
    cmd += ["--total-timesteps", str(args.steps * nproc), "--device", args.device]
    cmd += ["--no-progress", "--logdir", logdir, "--run-name", name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    match = RATE.search(out.stdout)
    if out.returncode != 0 or match is None:
        sys.exit(f"bench_scale: job failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
    return float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--env", default="rlgate/PassiveMatch-v0")
    parser.add_argument("--agent", default="ppo")
    parser.add_argument("--core", default="ur-lstm")
    parser.add_argument("--num-envs", type=int, default=32, help="per process")
    parser.add_argument("--unroll-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40_000, help="env steps per process")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    cases = [(1, min(cpus, 2 if args.device == "cpu" else 1))]  # one process, all its threads
    for n in args.nproc:
        threads = 1 if args.device != "cpu" else max(1, cpus // n)
        if (n, threads) not in cases:
            cases.append((n, threads))
    rates: dict[tuple[int, int], list[float]] = {c: [] for c in cases}
    with tempfile.TemporaryDirectory() as logdir:
        for r in range(args.rounds):
            for n, threads in cases:
                rates[(n, threads)].append(run_job(n, threads, args, logdir, f"{n}x{threads}-{r}"))
    base = statistics.median(rates[cases[0]])
    rows = []
    for n, threads in cases:
        sps = statistics.median(rates[(n, threads)])
        rows.append(
            [n, threads, n * args.num_envs, f"{sps:,.0f}", f"{sps / n:,.0f}", f"{sps / base:.2f}x"]
        )
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"# {args.agent} {args.core} on {args.env}, {args.num_envs} envs x "
        f"{args.unroll_length} steps per process, {args.steps} steps per process, "
        f"{args.rounds} rounds; {device}, {cpus} cores, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    header = ["processes", "threads", "envs", "steps/s", "steps/s per process", "vs 1 process"]
    print(format_table(header, rows))


if __name__ == "__main__":
    main()
