"""Environment steps per second: rlgate's tensor tasks vs minigrid through gymnasium's vector envs.

Usage:
    python scripts/bench_envs.py           # N in {1, 64, 1024, 8192}, cpu (+ cuda if present)
    python scripts/bench_envs.py --quick   # smaller grid

Every case steps random actions for about ``--seconds`` and reports env steps (transitions) per
second. minigrid's MiniGrid-MemoryS7-v0 runs through SyncVectorEnv and AsyncVectorEnv in the
same run; ratios are to the best of those. Target: the MemoryS7 clone at N=1024 >= 100x.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch

from rlgate.benchmark import format_table
from rlgate.envs import ENVS, make_vec

TASKS = [
    "rlgate/PassiveMatch-v0",
    "rlgate/ActiveMatch-v0",
    "rlgate/TMaze-v0",
    "rlgate/MemoryS7-v0",
    "rlgate/MemoryS17-v0",
]


def steps_per_second(env, seconds: float, device: str) -> float:
    env.reset()
    n, k = env.num_envs, env.num_actions
    actions = torch.randint(0, k, (64, n), device=device)
    for i in range(3):  # warm-up
        env.step(actions[i])
    steps, t0 = 0, time.perf_counter()
    while True:
        for i in range(8):
            env.step(actions[(steps + i) % 64])
        steps += 8
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return steps * n / elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024, 8192])
    ap.add_argument("--tasks", nargs="+", default=TASKS, choices=list(ENVS))
    ap.add_argument("--sync-envs", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--async-envs", type=int, nargs="+", default=[2, 4, 16])
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.num_envs, args.sync_envs, args.async_envs, args.seconds = [1, 1024], [16], [2], 0.5
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"# bench_envs: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, devices {devices}, ~{args.seconds}s per case"
    )
    rows = []
    baseline = {}
    for kind, sizes in (("sync", args.sync_envs), ("async", args.async_envs)):
        for n in sizes:
            env = make_vec("MiniGrid-MemoryS7-v0", n, seed=0, vectorization=kind)
            sps = steps_per_second(env, args.seconds, "cpu")
            env.close()
            baseline[(kind, n)] = sps
            print(f"  minigrid {kind} N={n}: {sps:,.0f}/s", file=sys.stderr, flush=True)
    best = max(baseline.values())
    for (kind, n), sps in baseline.items():
        rows.append(
            [
                "MiniGrid-MemoryS7-v0",
                f"minigrid {kind}VectorEnv",
                "cpu",
                n,
                f"{sps:,.0f}",
                f"{sps / best:.2f}x",
            ]
        )
    for device in devices:
        for task in args.tasks:
            for n in args.num_envs:
                env = make_vec(task, n, device=device, seed=0)
                sps = steps_per_second(env, args.seconds, device)
                rows.append([task, "rlgate tensor", device, n, f"{sps:,.0f}", f"{sps / best:.1f}x"])
                print(f"  {task} {device} N={n}: {sps:,.0f}/s", file=sys.stderr, flush=True)
    print(
        format_table(
            ["env", "implementation", "device", "num_envs", "steps/s", "vs best minigrid"], rows
        )
    )
    clone = [r for r in rows if r[0] == "rlgate/MemoryS7-v0" and r[2] == "cpu" and r[3] == 1024]
    if clone:
        ratio = float(clone[0][4].replace(",", "")) / best
        print(
            f"\n# target: MemoryS7 clone at N=1024 on CPU >= 100x the best minigrid vector env: "
            f"{ratio:.0f}x ({'met' if ratio >= 100 else 'MISSED'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
