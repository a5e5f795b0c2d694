"""Forward+backward time of every core, fused and reference, against torch.nn.LSTM.

Usage:
    python scripts/bench_cores.py            # the RL grid: B in {64, 256}, H in {128, 256}
    python scripts/bench_cores.py --quick    # one small shape, a few cores (the README's demo)
    python scripts/bench_cores.py --small    # learner-minibatch shapes: the native kernels'
        # whole-sequence loop vs their step-by-step loop (B 4..128, H 32..128, T=128)
    python scripts/bench_cores.py --device cuda    # the GPU grid (Triton kernels vs cuDNN):
        # B in {64, 256, 1024}, T in {64, 256}, H in {128, 256, 512}, without and with resets
    python scripts/bench_cores.py --device cuda --dtype bf16
    python scripts/bench_cores.py --device cuda --tf32    # fp32 on TF32 tensor cores, as cuDNN

Prints a Markdown table of median milliseconds over interleaved rounds and the ratio to
torch.nn.LSTM (oneDNN on CPU, cuDNN on GPU) measured in the same rounds, plus the first-call
time (any one-time cost such as compilation) and, on CUDA, the peak memory of one call. Then
checks the issue's targets.

With ``--resets`` (default on CUDA: both), every column starts a new episode with probability
1/32 per step. The cores take the resets inside (``is_first``); nn.LSTM cannot, so its row
"nn.LSTM split" runs it the way cuDNN users must: the sequence is split at every step where some
column resets, and the state of those columns is zeroed between the pieces.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import torch

from rlgate.benchmark import format_table, time_interleaved
from rlgate.cores import CORES, fused_native, make_core, native
from rlgate.runtime import tune_cpu_allocator

PRESETS = sorted({p.name for p in CORES.values()}, key=list(CORES).index)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _fwd_bwd(module, x, state=None, is_first=None):
    def run():
        x.grad = None
        module.zero_grad(set_to_none=True)
        y = module(x, state, is_first)[0] if state is not None else module(x)[0]
        y.float().sum().backward()

    return run


def _steps_loop(fn):
    """fn with the native kernels' step-by-step loop forced (no whole-sequence loop)."""

    def run():
        old = fused_native.SEQUENCE_MACS, fused_native.BLAS_MACS
        fused_native.SEQUENCE_MACS, fused_native.BLAS_MACS = 0, 0
        try:
            fn()
        finally:
            fused_native.SEQUENCE_MACS, fused_native.BLAS_MACS = old

    return run


def _native_loop(core, batch: int, hidden: int) -> str:
    """Which loop the native path takes at this shape (see fused_native.native_loop)."""
    return fused_native.native_loop(batch, hidden, core.weight_hh.shape[0])


def lstm_split_at_resets(lstm: torch.nn.LSTM, x, is_first):
    """How cuDNN users handle resets: one nn.LSTM call per piece between reset steps."""
    seq, batch = is_first.shape
    cuts = [t for t, any_reset in enumerate(is_first.any(1).tolist()) if any_reset and t > 0]
    bounds = list(zip([0, *cuts], [*cuts, seq]))
    keeps = [(~is_first[a]).to(x.dtype)[None, :, None] for a, _ in bounds]

    def run():
        x.grad = None
        lstm.zero_grad(set_to_none=True)
        h = x.new_zeros(1, batch, lstm.hidden_size)
        c = torch.zeros_like(h)
        ys = []
        for (a, b), keep in zip(bounds, keeps):
            y, (h, c) = lstm(x[a:b], (h * keep, c * keep))
            ys.append(y)
        torch.cat(ys).float().sum().backward()

    return run


def _peak_mb(fn, device) -> float:
    if torch.device(device).type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def native_build_note() -> str:
    """The native kernels' one-time cost: compile them afresh into a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("RLGATE_CACHE_DIR")
        os.environ["RLGATE_CACHE_DIR"] = tmp
        native._load.cache_clear()
        t0 = time.perf_counter()
        ok, why = native.available()
        seconds = time.perf_counter() - t0
        if old is None:
            del os.environ["RLGATE_CACHE_DIR"]
        else:
            os.environ["RLGATE_CACHE_DIR"] = old
    if not ok:
        return f"# native kernels unavailable: {why}"
    return (
        f"# native kernels: compiled from scratch in {seconds:.2f}s with {native.compiler()!r} "
        f"(once per machine; cached in {native.cache_dir()})"
    )


def bench_shape(batch, hidden, seq, inputs, cores, backends, rounds, device, resets, dtype):
    torch.manual_seed(0)
    x = torch.randn(seq, batch, inputs, device=device, dtype=dtype, requires_grad=True)
    if resets:
        is_first = torch.rand(seq, batch, device=device) < 1 / 32
    else:
        is_first = torch.zeros(seq, batch, dtype=torch.bool, device=device)
    lstm = torch.nn.LSTM(inputs, hidden).to(device, dtype)
    cases = {"nn.LSTM": _fwd_bwd(lstm, x)}
    if resets:
        cases["nn.LSTM split"] = lstm_split_at_resets(lstm, x, is_first)
    paths = {}
    for name in cores:
        for backend in backends:
            steps = backend == "native-steps"
            core = make_core(name, inputs, hidden, backend="native" if steps else backend)
            core = core.to(device, dtype)
            state = core.initial_state(batch)
            run = _fwd_bwd(core, x, state, is_first)
            cases[f"{name}/{backend}"] = _steps_loop(run) if steps else run
            path = core.resolve_backend(x)
            if path == "native":
                path += " " + ("steps" if steps else _native_loop(core, batch, hidden))
            paths[f"{name}/{backend}"] = path
    ms, first = time_interleaved(cases, rounds=rounds, device=device)
    peak = {k: _peak_mb(fn, device) for k, fn in cases.items()}
    base = ms["nn.LSTM"]
    rows = []
    for key in cases:
        name, _, backend = key.partition("/")
        if backend and paths[key] != backend:
            backend = f"{backend}: {paths[key]}"  # the path "fused" resolved to
        rows.append(
            [
                name,
                backend or ("cuDNN" if torch.device(device).type == "cuda" else "oneDNN"),
                batch,
                seq,
                hidden,
                "yes" if resets else "no",
                f"{ms[key]:.2f}",
                f"{ms[key] / base:.2f}x",
                f"{first[key]:.0f}",
                "-" if peak[key] != peak[key] else f"{peak[key]:.0f}",
            ]
        )
    return rows, {k: v / base for k, v in ms.items()}


def gpu_targets(ratios) -> None:
    """The GPU targets at B=256, T=64, H=256 (ur-lstm fused, Triton)."""
    print(
        "\n# targets (CUDA, B=256 T=64 H=256): ur-lstm fused <= 1x cuDNN nn.LSTM without resets; "
        ">= 3x faster than cuDNN split at resets; >= 5x faster than the reference loop"
    )
    for (batch, seq, hidden, reset), r in ratios.items():
        if (batch, seq, hidden) != (256, 64, 256) or "ur-lstm/fused" not in r:
            continue
        fused = r["ur-lstm/fused"]
        notes = []
        if reset:
            speedup = r["nn.LSTM split"] / fused
            notes.append(f"vs cuDNN split {speedup:.2f}x faster (>= 3: {speedup >= 3})")
        else:
            notes.append(f"vs cuDNN {fused:.2f}x (<= 1: {fused <= 1})")
        if "ur-lstm/reference" in r:
            speedup = r["ur-lstm/reference"] / fused
            notes.append(f"vs reference {speedup:.2f}x faster (>= 5: {speedup >= 5})")
        print(f"resets={'yes' if reset else 'no'}: " + "; ".join(notes))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="CPU 64 256; CUDA +1024")
    ap.add_argument("--hidden", type=int, nargs="+", default=None, help="CPU 128 256; CUDA +512")
    ap.add_argument("--seq", type=int, nargs="+", default=None, help="CPU 64; CUDA 64 256")
    ap.add_argument(
        "--resets", choices=["no", "yes", "both"], default=None, help="CPU no; CUDA both"
    )
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument(
        "--tf32",
        action="store_true",
        help="CUDA fp32: TF32 tensor cores for matmuls and the Triton kernels' dots (cuDNN's "
        "RNNs use TF32 by default through torch.backends.cudnn.allow_tf32)",
    )
    ap.add_argument("--inputs", type=int, default=64)
    ap.add_argument("--cores", nargs="+", default=PRESETS, choices=PRESETS)
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["fused", "reference"],
        choices=["fused", "reference", "native", "native-steps", "pytorch"],
        help="fused: the fastest fused path (native on CPU, Triton on CUDA; the table says "
        "which, and for native which loop: the whole sequence in one call or step by step); "
        "native / pytorch: that path alone (pytorch: the fused path in PyTorch ops); "
        "native-steps: native with its step-by-step loop forced",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="B=64, H=128, lstm/ur-lstm/gru")
    ap.add_argument(
        "--small",
        action="store_true",
        help="PPO-minibatch shapes (B 4..128, H 32..128, T=128; lstm, ur-lstm, gru): the "
        "native whole-sequence loop vs the step-by-step one, to place fused_native.SEQUENCE_MACS",
    )
    ap.add_argument(
        "--no-tune-allocator",
        action="store_true",
        help="keep glibc's default malloc settings (see rlgate.runtime)",
    )
    args = ap.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    args.batch = args.batch or ([64, 256, 1024] if cuda else [64, 256])
    args.hidden = args.hidden or ([128, 256, 512] if cuda else [128, 256])
    args.seq = args.seq or ([64, 256] if cuda else [64])
    args.resets = args.resets or ("both" if cuda else "no")
    if args.quick:
        args.batch, args.hidden, args.cores, args.rounds = (
            [64],
            [128],
            ["lstm", "ur-lstm", "gru"],
            3,
        )
    if args.small:
        args.batch, args.hidden, args.seq = [4, 8, 16, 32, 64, 128], [32, 64, 128], [128]
        args.cores = ["lstm", "ur-lstm", "gru"] if args.cores == PRESETS else args.cores
        args.backends = ["native", "native-steps"]
    tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    if not cuda:
        print(native_build_note())
    print(
        f"# bench_cores: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}, "
        f"{torch.cuda.get_device_name(args.device) if cuda else ''} {args.dtype}"
        f"{' tf32' if args.tf32 else ''}, cudnn tf32={torch.backends.cudnn.allow_tf32}, "
        f"I={args.inputs}, allocator tuned={tuned}, median of {args.rounds}"
    )
    header = [
        "core",
        "backend",
        "B",
        "T",
        "H",
        "resets",
        "ms",
        "vs nn.LSTM",
        "first ms",
        "peak MiB",
    ]
    resets = {"no": [False], "yes": [True], "both": [False, True]}[args.resets]
    all_rows, ratios = [], {}
    for batch in args.batch:
        for seq in args.seq:
            for hidden in args.hidden:
                for reset in resets:
                    rows, r = bench_shape(
                        batch,
                        hidden,
                        seq,
                        args.inputs,
                        args.cores,
                        args.backends,
                        args.rounds,
                        args.device,
                        reset,
                        DTYPES[args.dtype],
                    )
                    all_rows += rows
                    ratios[(batch, seq, hidden, reset)] = r
                    print(f"  done B={batch} T={seq} H={hidden} resets={reset}", file=sys.stderr)
    print(format_table(header, all_rows))
    if args.small:
        print(f"\n# native whole-sequence loop up to SEQUENCE_MACS = {fused_native.SEQUENCE_MACS}")
        for (batch, _, hidden, _), r in ratios.items():
            loops = [
                f"{k.split('/')[0]} {r[k] / r[k.replace('native-steps', 'native')]:.2f}x"
                for k in r
                if k.endswith("/native-steps")
            ]
            print(f"B={batch} H={hidden}: steps vs sequence time: " + ", ".join(loops))
    if cuda:
        gpu_targets(ratios)
    elif "fused" in args.backends:
        print(
            "\n# targets (CPU): fused ur-lstm <= 1.3x nn.LSTM at B=256, <= 1.6x at B=64; "
            "fused faster than reference everywhere; no fused preset above 2x"
        )
        for (batch, _, hidden, reset), r in ratios.items():
            if reset:  # the CPU targets are without resets
                continue
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
