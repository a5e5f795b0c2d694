"""Forward+backward time of every core, fused and reference, against torch.nn.LSTM.

Usage:
    python scripts/bench_cores.py            # the RL grid: B in {64, 256}, H in {128, 256}
    python scripts/bench_cores.py --quick    # one small shape, a few cores (the README's demo)

Prints a Markdown table of median milliseconds over interleaved rounds and the ratio to
torch.nn.LSTM (oneDNN on CPU, cuDNN on GPU) measured in the same rounds, plus the first-call
time (any one-time cost such as compilation). Then checks the issue's CPU targets.
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from rlgate.benchmark import format_table, time_interleaved
from rlgate.cores import CORES, make_core
from rlgate.runtime import tune_cpu_allocator

PRESETS = sorted({p.name for p in CORES.values()}, key=list(CORES).index)


def _fwd_bwd(module, x, state=None, is_first=None):
    def run():
        x.grad = None
        module.zero_grad(set_to_none=True)
        y = module(x, state, is_first)[0] if state is not None else module(x)[0]
        y.sum().backward()

    return run


def bench_shape(batch, hidden, seq, inputs, cores, backends, rounds, device):
    torch.manual_seed(0)
    x = torch.randn(seq, batch, inputs, device=device, requires_grad=True)
    cases = {"nn.LSTM": _fwd_bwd(torch.nn.LSTM(inputs, hidden).to(device), x)}
    for name in cores:
        for backend in backends:
            core = make_core(name, inputs, hidden, backend=backend).to(device)
            state = core.initial_state(batch)
            is_first = torch.zeros(seq, batch, dtype=torch.bool, device=device)
            cases[f"{name}/{backend}"] = _fwd_bwd(core, x, state, is_first)
    ms, first = time_interleaved(cases, rounds=rounds, device=device)
    base = ms["nn.LSTM"]
    rows = []
    for key in cases:
        name, _, backend = key.partition("/")
        rows.append(
            [
                name,
                backend or "oneDNN/cuDNN",
                batch,
                hidden,
                f"{ms[key]:.1f}",
                f"{ms[key] / base:.2f}x",
                f"{first[key]:.0f}",
            ]
        )
    return rows, {k: v / base for k, v in ms.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--cores", nargs="+", default=PRESETS, choices=PRESETS)
    ap.add_argument(
        "--backends", nargs="+", default=["fused", "reference"], choices=["fused", "reference"]
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="B=64, H=128, lstm/ur-lstm/gru")
    ap.add_argument(
        "--no-tune-allocator",
        action="store_true",
        help="keep glibc's default malloc settings (see rlgate.runtime)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.hidden, args.cores, args.rounds = (
            [64],
            [128],
            ["lstm", "ur-lstm", "gru"],
            3,
        )
    tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    print(
        f"# bench_cores: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}, "
        f"T={args.seq}, I={args.inputs}, allocator tuned={tuned}, median of {args.rounds}"
    )
    header = ["core", "backend", "B", "H", "ms", "vs nn.LSTM", "first call ms"]
    all_rows, ratios = [], {}
    for batch in args.batch:
        for hidden in args.hidden:
            rows, r = bench_shape(
                batch,
                hidden,
                args.seq,
                args.inputs,
                args.cores,
                args.backends,
                args.rounds,
                args.device,
            )
            all_rows += rows
            ratios[(batch, hidden)] = r
            print(f"  done B={batch} H={hidden}", file=sys.stderr, flush=True)
    print(format_table(header, all_rows))
    if "fused" in args.backends:
        print(
            "\n# targets (CPU): fused ur-lstm <= 1.3x nn.LSTM at B=256, <= 1.6x at B=64; "
            "fused faster than reference everywhere; no fused preset above 2x"
        )
        for (batch, hidden), r in ratios.items():
            notes = []
            if "ur-lstm/fused" in r:
                limit = 1.3 if batch >= 256 else 1.6
                ok = r["ur-lstm/fused"] <= limit
                notes.append(
                    f"ur-lstm {r['ur-lstm/fused']:.2f}x (<= {limit}: {'met' if ok else 'MISSED'})"
                )
            worst = max((v, k) for k, v in r.items() if k.endswith("/fused"))
            notes.append(f"worst fused {worst[1]} {worst[0]:.2f}x")
            slower = [
                k.split("/")[0]
                for k in r
                if k.endswith("/fused")
                and f"{k.split('/')[0]}/reference" in r
                and r[k] >= r[f"{k.split('/')[0]}/reference"]
            ]
            notes.append("fused slower than reference: " + (", ".join(slower) or "none"))
            print(f"B={batch} H={hidden}: " + "; ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
