"""The native CPU gate kernels (native.c): compiled once per machine, cached, loaded with ctypes.

The fused path's matmuls are PyTorch's; what costs time on a CPU besides them is the gate math,
a dozen small PyTorch ops per step that each read and write [B, H] tensors. native.c does a
step's gate math, forward or backward, in one pass. It needs a C compiler (``$CC``, else
``cc``, ``gcc`` or ``clang``), used on first use only: the library is cached under
``$RLGATE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/rlgate`` or ``~/.cache/rlgate``), keyed by the
source, the compiler and the CPU, and compiling it takes about a second. Where torch's OpenMP
runtime is libgomp.so.1 it is built with -fopenmp, and rows are split over torch's threads
(``openmp()``): in the whole-sequence loop each thread runs every step for its rows, in the
step-by-step loop a step's rows are shared out. Nothing happens on import; ``available()``
says whether the kernels can run and if not, why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
# -fopenmp-simd only honours the `omp simd` pragmas (no OpenMP runtime); no -ffast-math, so
# NaN and inf keep their meaning.
FLAGS = (
    "-O3",
    "-std=c11",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fPIC",
)
#: The gate kernels' own flag: a multiply and an add may fuse into one FMA (ISO C, -std=c11,
#: forbids it by default). Their matmuls, polynomials and sums then round once where they
#: rounded twice: ~1.3x on the recurrences (docs/benchmarks.md), results within float
#: rounding of the unfused ones. The env kernels keep ISO C's rule: their results must equal
#: the torch path bit for bit.
CORE_FLAGS = ("-ffp-contract=fast", "-lm")
#: Tried in order until one compiles: this CPU's instructions, with its widest vectors where it
#: has AVX-512 (GCC and Clang prefer 256-bit ones there unless told; the kernels' register
#: tiles are sized for 512: ~1.4x on the recurrences), then without, then portable code.
ARCH_CHOICES = (("-march=native", "-mprefer-vector-width=512"), ("-march=native",), ())
#: Tried first where torch runs on GNU OpenMP (``torch_libgomp``): a step's rows are then split
#: over torch's own OpenMP threads (the library links libgomp.so.1, which resolves to the copy
#: torch has loaded: one thread pool, no second set of spinning threads).
OPENMP_FLAGS = ("-fopenmp",)

_P = ctypes.c_void_p
_I = ctypes.c_int
SIGNATURES = {
    "lstm_forward": (_I, _I, _I, _P, _P, _P, _P, _P, _P, _P),
    "lstm_backward": (_I, _I, _I, _P, _P, _P, _P, _P, _P, _P),
    "gru_forward": (_I, _I, _I, _P, _P, _P, _P, _P),
    "gru_backward": (_I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P),
    "master_forward": (_I, _I, _I, *[_P] * 7),
    "master_backward": (_I, _I, _I, *[_P] * 7),
    "lstm_sequence_forward": (_I, _I, _I, _I, _I, *[_P] * 9),
    "lstm_sequence_backward": (_I, _I, _I, _I, _I, *[_P] * 10),
    "gru_sequence_forward": (_I, _I, _I, _I, *[_P] * 9),
    "gru_sequence_backward": (_I, _I, _I, _I, *[_P] * 11),
}
_L = ctypes.c_int64
#: the kernels that check what they are handed and return 0, or a negative code (nothing written)
CHECKED = {
    "onehot_forward": (_L, _I, _L, _I, _P, _P, _P, _P),
    "onehot_backward": (_L, _I, _L, _I, _P, _P, _P, _P),
    "view_forward": (*[_L] * 6, *[_P] * 5),
    "view_backward": (*[_L] * 6, *[_P] * 7),
    "view_forward_act": (*[_L] * 6, *[_P] * 4, _L, _P),
    "view_backward_act": (*[_L] * 6, *[_P] * 4, _L, *[_P] * 5),
    "ppo_categorical_forward": (_L, _L, *[_P] * 7, ctypes.c_float, *[_P] * 3),
    "ppo_categorical_backward": (_L, _L, *[_P] * 6, *[ctypes.c_float] * 3, _P, _P),
}


class NativeUnavailable(RuntimeError):
    """The native kernels can't be built or loaded here (the message says why)."""


def cache_dir() -> Path:
    """Where compiled kernels are kept: $RLGATE_CACHE_DIR, else the user's cache folder."""
    if os.environ.get("RLGATE_CACHE_DIR"):
        return Path(os.environ["RLGATE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rlgate"


def compiler() -> str | None:
    """The C compiler to use: $CC, else the first of cc, gcc, clang on PATH."""
    if os.environ.get("CC"):
        return os.environ["CC"]
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


def _compiler_id(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"C compiler {cc!r} does not run: {e}") from None
    return out.stdout + out.stderr


def openmp_runtimes() -> set[str]:
    """The OpenMP runtime libraries mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return set()
    names = ("libgomp", "libiomp", "libomp")
    return {p for p in paths if os.path.basename(p).startswith(names)}


def torch_libgomp() -> bool:
    """Whether torch's OpenMP runtime is GNU's under the soname libgomp.so.1 (what a -fopenmp
    build links), so that native.c's parallel loops share torch's threads."""
    torch.get_num_threads()  # torch has loaded its runtime by now
    runtimes = openmp_runtimes()
    return len(runtimes) == 1 and os.path.basename(next(iter(runtimes))) == "libgomp.so.1"


def _compile(cc: str, target: Path, source: Path = SOURCE, extra: tuple[str, ...] = ()) -> None:
    """Compile source into target, atomically (temp file + rename): safe under parallel ranks."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    last = ""
    try:
        openmp = (OPENMP_FLAGS, ()) if torch_libgomp() else ((),)
        for omp in openmp:
            for arch in ARCH_CHOICES:  # x86 and arm64 GCC/Clang flags
                cmd = [cc, *FLAGS, *omp, *arch, "-shared", str(source), "-o", tmp, *extra]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                if out.returncode == 0:
                    os.replace(tmp, target)
                    return
                lines = (out.stderr or out.stdout).strip().splitlines()
                last = lines[-1] if lines else f"exit code {out.returncode}"
        raise NativeUnavailable(f"compiling {source.name} with {cc!r} failed: {last}")
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"compiling {source.name} with {cc!r} failed: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build(source: Path, name: str, extra: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile a C file (once per source, flags, compiler and CPU: cached under ``cache_dir()``
    as ``{name}-{key}.so``) with ``extra`` arguments after FLAGS (flags, libraries) and load
    it; raises NativeUnavailable saying why where it can't be."""
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler found (set $CC, or install gcc or clang)")
    key = hashlib.sha256(
        b"\0".join(
            [
                source.read_bytes(),
                " ".join((*FLAGS, *extra)).encode(),
                repr(ARCH_CHOICES).encode(),
                str(torch_libgomp()).encode(),
                _compiler_id(cc).encode(),
                _cpu_id().encode(),
            ]
        )
    ).hexdigest()[:20]
    path = cache_dir() / f"{name}-{key}.so"
    if not path.exists():
        t0 = time.perf_counter()
        _compile(cc, path, source, extra)
        log.info("compiled %s in %.2fs: %s", source.name, time.perf_counter() - t0, path)
    try:
        return ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeUnavailable(f"loading {path.name} failed: {e}") from None


@functools.cache
def _load() -> ctypes.CDLL | NativeUnavailable:
    try:
        lib = build(SOURCE, "native", CORE_FLAGS)
    except NativeUnavailable as e:
        return e
    for name, args in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, None
    for name, args in CHECKED.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, ctypes.c_int
    lib.native_openmp.argtypes, lib.native_openmp.restype = (), ctypes.c_int
    if lib.native_openmp():
        log.info("native kernels: a step's rows split over torch's OpenMP threads")
    elif torch_libgomp():
        log.warning("native kernels: built without OpenMP (-fopenmp failed): one thread per step")
    else:
        log.info("native kernels: one thread per step (torch's OpenMP is not libgomp.so.1)")
    return lib


def openmp() -> bool:
    """Whether the loaded kernels split a step's rows over torch's OpenMP threads."""
    return bool(library().native_openmp())


def available() -> tuple[bool, str]:
    """Whether the native kernels can run here (building them on first call), and if not, why."""
    lib = _load()
    return (False, str(lib)) if isinstance(lib, NativeUnavailable) else (True, "")


def library() -> ctypes.CDLL:
    """The loaded kernels; raises NativeUnavailable with the reason where they can't be had."""
    lib = _load()
    if isinstance(lib, NativeUnavailable):
        raise lib
    return lib


@functools.cache
def blas_sgemm() -> int | None:
    """The address of the BLAS ``sgemm_`` that torch itself uses on this CPU (MKL's, exported
    by libtorch_cpu on x86-64 Linux builds), for native.c's whole-sequence loop at sizes where
    its own small matmul is slower; None where torch was not built with MKL or does not export
    it (then the fused path runs step by step, with torch's matmuls)."""
    if not torch.backends.mkl.is_available():
        return None
    libdir = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        try:
            fn = ctypes.CDLL(str(libdir / name)).sgemm_
        except (OSError, AttributeError):
            continue
        log.info("native kernels: whole-sequence loop with torch's sgemm_ from %s", name)
        return ctypes.cast(fn, ctypes.c_void_p).value
    log.info("native kernels: torch exports no sgemm_; mid-sized steps run one by one")
    return None


@functools.cache
def _onednn_linear():
    """torch's oneDNN linear op (15-25% faster than MKL's sgemm on the per-step matmuls of
    these cores on the machines measured), or None where this torch build lacks it."""
    op = None
    try:
        if torch.backends.mkldnn.is_available():
            op = torch.ops.mkldnn._linear_pointwise
            probe = op(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4), "none", [], "")
            if not torch.equal(probe, torch.full((2, 4), 4.0)):
                op = None
    except (AttributeError, RuntimeError):
        op = None
    log.info(
        "native kernels: per-step matmuls through %s",
        "oneDNN" if op is not None else "torch.nn.functional.linear (no oneDNN linear here)",
    )
    return op


#: Below this many multiply-adds (N K M) MKL's addmm beats oneDNN's linear, whose fixed cost
#: is ~15-20 us a call (measured on the 2-core EPYC: [32, 64] x [64, 256] 12 vs 24 us).
ONEDNN_MIN_MACS = 1 << 22


def linear(x: Tensor, w: Tensor, b: Tensor | None = None) -> Tensor:
    """x @ w^T (+ b) for float32 CPU tensors: x [N, K], w [M, K], b [M] -> [N, M]."""
    op = _onednn_linear()
    if op is None or x.shape[0] * x.shape[1] * w.shape[0] < ONEDNN_MIN_MACS:
        return torch.nn.functional.linear(x, w, b)
    return op(x, w, b, "none", [], "")


_TRANSPOSED: dict[int, tuple[weakref.ref, int, int, Tensor]] = {}


def transposed(w: Tensor) -> Tensor:
    """w^T as a contiguous tensor (no autograd), kept until w changes (its version counter, which
    every in-place update such as an optimizer step bumps, or its storage) or is freed: between
    two updates the acting steps hand the same weights to the kernels hundreds of times, and a
    transposed copy costs more than the step's arithmetic at these sizes."""
    key = id(w)
    hit = _TRANSPOSED.get(key)
    if hit is not None and hit[0]() is w and hit[1] == w._version and hit[2] == w.data_ptr():
        return hit[3]
    t = w.detach().t().contiguous()
    ref = weakref.ref(w, lambda _, k=key: _TRANSPOSED.pop(k, None))
    _TRANSPOSED[key] = (ref, w._version, w.data_ptr(), t)
    return t
