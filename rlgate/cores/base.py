"""The one interface every recurrent core implements, and backend selection.

Time-major everywhere: x is [T, B, I]; ``is_first[t, b]`` is True where x[t, b] begins an
episode, so the state of column b is reset to the initial state before step t.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rlgate.cores.presets import Preset
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


class LSTMState(NamedTuple):
    """State of the LSTM family: hidden h and cell c, [B, H] each."""

    h: Tensor
    c: Tensor


class GRUState(NamedTuple):
    """State of the GRU family: hidden h, [B, H]."""

    h: Tensor


class RecurrentCore(nn.Module):
    """Base class of every core: owns its initial state and its episode resets.

    Subclasses provide ``_cell`` (the readable one-step math, used by ``step``, ``gates`` and
    the reference backend) and ``_fused`` (the fast sequence path).
    """

    State: type = LSTMState

    def __init__(self, preset: Preset, input_size: int, hidden_size: int, backend: str):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}"
            )
        self.preset = preset
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.backend = backend
        self._announced: set[tuple[str, str]] = set()

    # ----------------------------------------------------------------- the contract
    def initial_state(self, batch_size: int, device: torch.device | str | None = None):
        """Zero state for ``batch_size`` columns: a NamedTuple of [B, H] tensors."""
        w = self.weight_hh
        device = w.device if device is None else device
        zeros = [
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=w.dtype)
            for _ in self.State._fields
        ]
        return self.State(*zeros)

    def forward(self, x: Tensor, state, is_first: Tensor | None = None):
        """Run the core over a sequence.

        Args:
            x: inputs, [T, B, I].
            state: the state before x[0] (NamedTuple of [B, H]).
            is_first: [T, B] bool; where True the state is reset before that step.
                None means no resets.

        Returns:
            (y, final_state): y is [T, B, H], final_state the state after x[T-1].
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be [T, B, {self.input_size}], got {tuple(x.shape)}")
        if is_first is None:
            is_first = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        if is_first.shape != x.shape[:2]:
            raise ValueError(f"is_first must be [T, B] = {tuple(x.shape[:2])}")
        state = self.State(*state)
        path = self.resolve_backend(x)
        if path in ("native", "triton"):
            y, final = _kernel_forward(self, path, x, state, is_first.to(torch.bool))
            return y, self.State(*final)
        if path == "pytorch":
            y, final = self._fused(x, state, is_first.to(torch.bool), native=False)
            return y, self.State(*final)
        return self._reference(x, state, is_first)

    def step(self, x_t: Tensor, state):
        """One step for acting: x_t [B, I] -> (y_t [B, H], new state). No resets here."""
        new_state, _ = self._cell(x_t, self.State(*state))
        return new_state.h, new_state

    @torch.no_grad()
    def gates(self, x_t: Tensor, state) -> dict[str, Tensor]:
        """Gate activations of one step, [B, H] each.

        Keys: "f" (primary forget/retention gate), "r" (refine gate, where the core has
        one) and "g" (the effective gate that multiplies the previous state). Computed only
        when called; forward never pays for it.
        """
        _, gates = self._cell(x_t, self.State(*state))
        return gates

    # ----------------------------------------------------------------- backends
    @opaque_to_compile  # reads files and caches: decided eagerly under torch.compile
    def resolve_backend(self, x: Tensor) -> str:
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
        if self.backend == "reference":
            return "reference"
        if self.backend in ("triton", "native", "pytorch"):
            ok, why = self.path_available(self.backend, x)
            if not ok:
                raise BackendUnavailable(f"backend={self.backend!r} is unavailable here: {why}")
            return self.backend
        choice, why, degraded = self._fused_choice(x)
        if choice is None and self.backend == "fused":
            raise BackendUnavailable(f"backend='fused' is unavailable here: {why}")
        choice = choice or "reference"
        key = (str(x.device), x.dtype, choice)
        if key not in self._announced:
            self._announced.add(key)
            log.log(
                logging.WARNING if degraded else logging.INFO,
                "%s: backend=%r picked %s (the %s path) on %s (%s)%s",
                self.preset.name,
                self.backend,
                choice,
                PATH_NAMES[choice],
                x.device,
                str(x.dtype).replace("torch.", ""),
                f": {why}" if why else "",
            )
        return choice

    def _fused_choice(self, x: Tensor) -> tuple[str | None, str, bool]:
        """The fused path for x ("triton", "native", "pytorch" or None), a note on why, and
        whether a faster kernel covers this case but can't run here (logged as a WARNING)."""
        device = x.device.type
        kernel = {"cuda": "triton", "cpu": "native"}.get(device)
        why_not = ""
        if kernel is not None:
            ok, why_not = self.path_available(kernel, x)
            if ok:
                return kernel, "", False
        covered = kernel is not None and self._kernel_covers(kernel, x)
        if covered and device == "cuda" and self.backend == "fused":
            return None, why_not, False  # the GPU fused path of these cores is Triton
        ok, why = self.path_available("pytorch", x)
        if not ok:
            return None, why, False
        # On CUDA the PyTorch fused path is always the slow choice (a WARNING); on CPU only
        # where the native kernels cover the core but can't run.
        return "pytorch", why_not, device == "cuda" or covered

    def _kernel_covers(self, kernel: str, x: Tensor) -> bool:
        if kernel == "triton":
            return self.triton_mode() is not None and x.dtype in TRITON_DTYPES
        return self.native_mode() is not None and x.dtype in NATIVE_DTYPES

    def path_available(self, path: str, x: Tensor) -> tuple[bool, str]:
        """Whether a fused path ("triton", "native", "pytorch") can run input x, and if not, why."""
        if path == "triton":
            return self.triton_available(x)
        if path == "native":
            if self.native_mode() is None:
                return False, f"no native kernel for {self.preset.name} (cumax forget gate)"
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

    def triton_mode(self) -> int | None:
        """The Triton kernels' mode for this core, or None where they don't cover it."""
        return None

    def native_mode(self) -> int | None:
        """The native CPU kernels' mode (numbered as triton_modes), or None where they don't
        cover this core."""
        return self.triton_mode()

    def triton_available(self, x: Tensor) -> tuple[bool, str]:
        """Whether the Triton kernels can run this core for input x, and if not, why."""
        if self.triton_mode() is None:
            return False, f"no Triton kernel for {self.preset.name} (cumax gates)"
        if x.dtype not in TRITON_DTYPES:
            return False, f"the Triton kernels take {TRITON_DTYPES}, got {x.dtype}"
        if not triton_installed():
            return False, "triton is not installed (pip install triton)"
        if x.device.type == "cpu" and not interpreted():
            return False, "Triton runs on CUDA, or on CPU under TRITON_INTERPRET=1"
        if x.device.type not in ("cpu", "cuda"):
            return False, f"no Triton kernel for device type {x.device.type!r}"
        return True, ""

    def _reference(self, x: Tensor, state, is_first: Tensor):
        """The specification: a plain loop of ``_cell`` with resets to the initial state."""
        init = self.initial_state(x.shape[1], device=x.device)
        ys = []
        for x_t, first_t in zip(x.unbind(0), is_first.unbind(0)):
            reset = first_t.unsqueeze(-1)  # [B, 1]
            state = self.State(*(torch.where(reset, s0, s) for s0, s in zip(init, state)))
            state, _ = self._cell(x_t, state)
            ys.append(state.h)
        return torch.stack(ys), state

    def extra_repr(self) -> str:
        return (
            f"core={self.preset.name}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, backend={self.backend}"
        )

    # ----------------------------------------------------------------- for subclasses
    def _create_weights(self, gate_width: int) -> None:
        """W_ih [G, I] and W_hh [G, H], G = gate_width, uninitialised."""
        self.weight_ih = nn.Parameter(torch.empty(gate_width, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(gate_width, self.hidden_size))

    def _reset_weights(self, generator: torch.Generator | None) -> None:
        """W_ih, W_hh ~ U(-1/sqrt(H), 1/sqrt(H)), as torch.nn.LSTM and torch.nn.GRU."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in (self.weight_ih, self.weight_hh):
            w.uniform_(-bound, bound, generator=generator)

    def _cell(self, x_t: Tensor, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fused(self, x: Tensor, state, is_first: Tensor, native: bool):  # pragma: no cover
        raise NotImplementedError

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:  # pragma: no cover
        """(W_ih, W_hh, b_ih, b_hh or None) for the Triton kernels."""
        raise NotImplementedError


@opaque_to_compile
def _kernel_forward(core: RecurrentCore, path: str, x: Tensor, state, is_first: Tensor):
    """The native or Triton kernels' recurrence (y, final state tuple).

    Opaque to ``torch.compile``: the kernels read raw pointers and keep their workspace in
    Python objects, which Dynamo can neither trace nor fake, so a compiled model runs this call
    eagerly (one graph break) with its own autograd, and the rest of the model compiled.
    """
    if path == "native":
        return core._fused(x, state, is_first, native=True)
    from rlgate.cores import triton_fused

    return triton_fused.run(core.triton_mode(), x, is_first, *core._weights(), tuple(state))
