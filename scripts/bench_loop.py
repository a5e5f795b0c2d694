"""Where the training loop's time goes, for any recipe: the shares of its parts and the ceilings.

Usage:
    python scripts/bench_loop.py                                    # memory-s7, ur-lstm, 1 thread
    python scripts/bench_loop.py --recipes memory-s7 passive-match --threads 1 2
    python scripts/bench_loop.py --recipes cartpole --core lstm --updates 20
    python scripts/bench_loop.py --device cuda --num-envs 64 1024     # the GPU at scale

Each recipe's run is built as ``rlgate train --recipe NAME --core CORE`` builds it, then driven
for ``--updates`` updates (after one untimed) with timers around its parts
(``rlgate.loop_profile``). The first table gives each part's share of the wall time and the
acting forward's milliseconds per batched env step; the second the steps/s of each part alone
in the same process (env under fixed actions, acting alone, collection, learning alone) beside
the loop's own.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile

import torch

from rlgate.benchmark import cpu_model, format_table
from rlgate.config import TrainConfig
from rlgate.loop_profile import PARTS, ceilings, profile_loop
from rlgate.recipes import RECIPES
from rlgate.runtime import tune_cpu_allocator


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["memory-s7"], choices=list(RECIPES))
    ap.add_argument("--core", default="ur-lstm")
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--num-envs", type=int, nargs="+", default=[None], help="default: each recipe's"
    )
    args = ap.parse_args(argv)
    if any(n is not None and n < 1 for n in args.num_envs):
        print("bench_loop: error: --num-envs must be >= 1", file=sys.stderr)
        return 2
    tune_cpu_allocator()
    shares, limits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe, envs, threads in itertools.product(args.recipes, args.num_envs, args.threads):
            torch.set_num_threads(threads)
            more = {} if envs is None else {"num_envs": envs}
            cfg = TrainConfig.from_recipe(
                recipe, core=args.core, seed=1, logdir=tmp, progress=False,
                total_timesteps=10**12, device=args.device, **more,
            )  # fmt: skip
            part = profile_loop(cfg, updates=args.updates)
            top = ceilings(cfg)
            sps = part["steps"] / part["total"]
            acting_ms = part["acting forward"] / (args.updates * cfg.unroll_length) * 1e3
            learner = sum(part[k] for k in PARTS[3:]) / part["total"]
            row = [recipe, cfg.num_envs, threads, f"{sps:,.0f}", f"{acting_ms:.3f}"]
            row.append(f"{learner:.0%}")
            shares.append(row + [f"{part[k] / part['total']:.0%}" for k in PARTS])
            limits.append(
                [recipe, cfg.num_envs, threads, f"{sps:,.0f}", *(f"{v:,.0f}" for v in top.values())]
            )
            names = list(top)
    print(f"# bench_loop: {cpu_model()}, core {args.core}, {args.updates} updates, {args.device}")
    head = ["recipe", "envs", "threads", "steps/s", "acting ms/step", "learner", *PARTS]
    print(format_table(head, shares))
    print()
    print(format_table(["recipe", "envs", "threads", "loop steps/s", *names], limits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
