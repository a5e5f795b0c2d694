"""Which backend runs a core's sequence, and the call into the kernels.

A core declares what its kernels cover (``triton_mode``, ``native_mode``, ``_fused``); this
module decides, for an input, which path runs: the reference loop, the native CPU kernels, the
Triton kernels or the PyTorch fused path. Every pick is logged once; nothing falls back
silently (docs/cores.md describes the rules).
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

from rlgate.cores.triton_modes import interpreted

log = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "fused", "native", "triton", "pytorch")
# what each path resolve_backend picks is called in logs
PATH_NAMES = {
    "reference": "reference",
    "native": "native CPU kernel",
    "triton": "Triton",
    "pytorch": "PyTorch fused",
}

# dtypes and device types of the PyTorch fused path; anything else must ask for "reference".
FUSED_DTYPES = (torch.float32, torch.float64)
FUSED_DEVICE_TYPES = ("cpu", "cuda")
# dtypes of the Triton kernels (fp32 state and accumulation either way)
TRITON_DTYPES = (torch.float32, torch.bfloat16)
# dtypes of the native CPU kernels (native.c)
NATIVE_DTYPES = (torch.float32,)


def opaque_to_compile(fn):
    """``fn`` runs eagerly under ``torch.compile`` (``torch.compiler.disable``: one graph
    break) and as it is otherwise. The disabled twin is made on the first compiled call:
    ``torch.compiler.disable`` imports torch._dynamo, ~1.7 s that an uncompiled program (every
    ``rlgate`` command) should not pay."""
    disabled = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal disabled
        if not torch.compiler.is_compiling():
            return fn(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(fn)
        return disabled(*args, **kwargs)

    return call


class BackendUnavailable(RuntimeError, ValueError):
    """The requested backend can't run this input here (the message says why). A ValueError
    too, so that the CLI reports it as bad input: one line, exit code 2."""


@functools.cache
def triton_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


@opaque_to_compile  # reads files and caches: decided eagerly under torch.compile
def resolve(core, x: Tensor) -> str:
    """Which path runs for input x: "reference", "native", "triton" or "pytorch".

    The fused paths: "native" (CPU, float32, every core but the cumax-forget o- and
    or-lstm: PyTorch's matmuls with each step's gate math in one call into native.c),
    "triton" (the Triton kernels: CUDA, or CPU under TRITON_INTERPRET=1) and "pytorch" (the
    fused path in PyTorch ops: any core, float32/float64, CPU or CUDA).

    ``backend="fused"`` (and ``"auto"``) means the fastest fused path for x: Triton on CUDA
    and native on CPU where they cover the core and dtype, else the PyTorch fused path.
    Where a covering kernel can't run, ``fused`` raises on CUDA, and on CPU (no C compiler)
    takes the PyTorch fused path with a WARNING; ``auto`` uses the reference where no fused
    path exists. ``"native"``, ``"triton"`` and ``"pytorch"`` ask for that path alone and
    raise with the reason where it can't run. Every pick is logged once per device and
    dtype; nothing falls back silently.
    """
    if core.backend == "reference":
        return "reference"
    if core.backend in ("triton", "native", "pytorch"):
        ok, why = path_available(core, core.backend, x)
        if not ok:
            raise BackendUnavailable(f"backend={core.backend!r} is unavailable here: {why}")
        return core.backend
    choice, why, degraded = fused_choice(core, x)
    if choice is None and core.backend == "fused":
        raise BackendUnavailable(f"backend='fused' is unavailable here: {why}")
    choice = choice or "reference"
    key = (str(x.device), x.dtype, choice)
    if key not in core._announced:
        core._announced.add(key)
        log.log(
            logging.WARNING if degraded else logging.INFO,
            "%s: backend=%r picked %s (the %s path) on %s (%s)%s",
            core.preset.name,
            core.backend,
            choice,
            PATH_NAMES[choice],
            x.device,
            str(x.dtype).replace("torch.", ""),
            f": {why}" if why else "",
        )
    return choice


def fused_choice(core, x: Tensor) -> tuple[str | None, str, bool]:
    """The fused path for x ("triton", "native", "pytorch" or None), a note on why, and
    whether a faster kernel covers this case but can't run here (logged as a WARNING)."""
    device = x.device.type
    kernel = {"cuda": "triton", "cpu": "native"}.get(device)
    why_not = ""
    if kernel is not None:
        ok, why_not = path_available(core, kernel, x)
        if ok:
            return kernel, "", False
    covered = kernel is not None and kernel_covers(core, kernel, x)
    if covered and device == "cuda" and core.backend == "fused":
        return None, why_not, False  # the GPU fused path of these cores is Triton
    ok, why = path_available(core, "pytorch", x)
    if not ok:
        return None, why, False
    # On CUDA the PyTorch fused path is always the slow choice (a WARNING); on CPU only
    # where the native kernels cover the core but can't run.
    return "pytorch", why_not, device == "cuda" or covered


def kernel_covers(core, kernel: str, x: Tensor) -> bool:
    if kernel == "triton":
        return core.triton_mode() is not None and x.dtype in TRITON_DTYPES
    return core.native_mode() is not None and x.dtype in NATIVE_DTYPES


def path_available(core, path: str, x: Tensor) -> tuple[bool, str]:
    """Whether a fused path ("triton", "native", "pytorch") can run input x, and if not, why."""
    if path == "triton":
        return triton_available(core, x)
    if path == "native":
        if core.native_mode() is None:
            return False, f"no native kernel for {core.preset.name} (cumax forget gate)"
        if x.device.type != "cpu":
            return False, f"the native kernels run on CPU, got {x.device.type}"
        if x.dtype not in NATIVE_DTYPES:
            return False, f"the native kernels take {NATIVE_DTYPES}, got {x.dtype}"
        from rlgate.cores import native

        return native.available()
    if x.device.type not in FUSED_DEVICE_TYPES:
        return False, f"no fused kernel for device type {x.device.type!r}"
    if x.dtype not in FUSED_DTYPES:
        return False, f"the PyTorch fused path supports {FUSED_DTYPES}, got {x.dtype}"
    return True, ""


def triton_available(core, x: Tensor) -> tuple[bool, str]:
    """Whether the Triton kernels can run this core for input x, and if not, why."""
    if core.triton_mode() is None:
        return False, f"no Triton kernel for {core.preset.name} (cumax gates)"
    if x.dtype not in TRITON_DTYPES:
        return False, f"the Triton kernels take {TRITON_DTYPES}, got {x.dtype}"
    if not triton_installed():
        return False, "triton is not installed (pip install triton)"
    if x.device.type == "cpu" and not interpreted():
        return False, "Triton runs on CUDA, or on CPU under TRITON_INTERPRET=1"
    if x.device.type not in ("cpu", "cuda"):
        return False, f"no Triton kernel for device type {x.device.type!r}"
    return True, ""


@opaque_to_compile
def kernel_forward(core, path: str, x: Tensor, state, is_first: Tensor):
    """The native or Triton kernels' recurrence (y, final state tuple).

    Opaque to ``torch.compile``: the kernels read raw pointers and keep their workspace in
    Python objects, which Dynamo can neither trace nor fake, so a compiled model runs this call
    eagerly (one graph break) with its own autograd, and the rest of the model compiled.
    """
    if path == "native":
        return core._fused(x, state, is_first, native=True)
    from rlgate.cores import triton_fused

    return triton_fused.run(core.triton_mode(), x, is_first, *core._weights(), tuple(state))
