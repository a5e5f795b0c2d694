"""The native CPU kernels' side of the fused loop: kernels whose per-step gate math, forward and
backward, is one call into native.c (float32), the choice of loop (``native_loop``), and the
checks of everything handed to C (``check_native_inputs``).

The native kernels also run small problems without the per-step loop:
``forward_sequence(xw, first, w_hh, b_hh, ys)`` does every step in one call, and
``backward_sequence(t0, t1, co, dh, dy, first, w_hh, dzx, dzh)`` a whole chunk of the backward,
updating dh (and the non-h state's gradient) in place.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from rlgate.cores import native
from rlgate.cores.fused import GRUKernel, LSTMKernel
from rlgate.cores.presets import Preset

# The native kernels precompute nothing per chunk: larger chunks make the weight-gradient
# matmuls larger (more efficient) at the cost of a larger dL/dz buffer.
_NATIVE_CHUNK_ELEMENTS = 1 << 20
#: Up to this many multiply-adds in a step's recurrent matmul (B x H x G), the native kernels
#: run the whole time loop in one call, matmul included (native.c's small_matmul), instead of a
#: native call and a oneDNN matmul from Python per step: below it, those calls' fixed cost
#: (~20-30 us a step) is more than the arithmetic. Measured by scripts/bench_cores.py --small.
SEQUENCE_MACS = 3 << 20
#: Above SEQUENCE_MACS and up to BLAS_MACS, the whole-sequence loop still runs where torch's
#: BLAS sgemm can be called from native.c (``native.blas_sgemm``: MKL on x86-64 Linux), with that
#: sgemm as the step's matmul: the same arithmetic without ~20-40 us of Python, ctypes and torch
#: dispatch per step. Above it oneDNN's matmul (per step, from Python) is the faster one
#: (scripts/bench_cores.py: the native and native-steps rows). 0 turns the loop off.
BLAS_MACS = 1 << 23


def native_loop(batch: int, hidden: int, gates: int) -> str:
    """Which loop the native kernels run for a step matmul of [batch, hidden] x [hidden, gates]:
    "sequence" (whole sequence, native.c's own matmul), "blas" (whole sequence, torch's BLAS
    sgemm) or "steps" (a native call and a oneDNN matmul per step, from Python)."""
    macs = batch * hidden * gates
    if macs <= SEQUENCE_MACS:
        return "sequence"
    if macs <= BLAS_MACS and native.blas_sgemm() is not None:
        return "blas"
    return "steps"


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


def _opt_ptr(t: Tensor | None, t0: int = 0) -> int | None:
    """The address of t[t0] (contiguous t), or None (NULL) for None."""
    return None if t is None else t[t0].data_ptr()


class _NativeMatmuls:
    """The per-step matmuls through oneDNN where torch has it (see ``native.linear``)."""

    w_hh_t: Tensor | None = None
    gemm: int | None = None  # the sgemm the whole-sequence loop calls (None: its own matmul)

    @staticmethod
    def project(x2: Tensor, w_ih: Tensor, b_ih: Tensor) -> Tensor:
        return native.linear(x2, w_ih, b_ih)

    def recurrent_grad(self, dzh_t: Tensor, w_hh: Tensor, dh_direct: Tensor | None) -> Tensor:
        if self.w_hh_t is None:
            self.w_hh_t = w_hh.t().contiguous()  # [H, G]: dzh_t W_hh = linear(dzh_t, W_hh^T)
        dh = native.linear(dzh_t, self.w_hh_t)
        return dh if dh_direct is None else dh.add_(dh_direct)


class NativeLSTMKernel(_NativeMatmuls, LSTMKernel):
    """LSTMKernel whose per-step gate math, forward and backward, is one call into native.c.

    float32 on CPU; ``mode`` is native.c's block layout (triton_modes LSTM, TIED, REFINE or
    MASTER, numbered alike). The loop is the shared ``_Recurrence``'s.
    """

    native = True
    chunk_elements = _NATIVE_CHUNK_ELEMENTS

    def __init__(self, preset: Preset, blocks: dict[str, slice], mode: int, chunk_size: int, lib):
        super().__init__(preset, blocks, chunk_size)
        self.mode, self.lib = mode, lib

    def allocate(self, t_len, batch, rest0, like, g) -> None:
        (c0,) = rest0
        hid = c0.shape[-1]
        self.batch, self.hid = batch, hid
        self.A = c0.new_empty(t_len, batch, g)  # activations; u's block holds tanh(z_u)
        self.C = c0.new_empty(t_len + 1, batch, hid)  # C[t] = c_{t-1} after reset
        self.C[0].copy_(c0)
        self.TC = c0.new_empty(t_len, batch, hid)  # tanh(c_t)
        self.dc = None

    @functools.cached_property
    def views(self) -> dict[str, tuple[Tensor, ...]]:
        """Per-step views of the workspace (the step-by-step loop only)."""
        return {"A": self.A.unbind(0), "C": self.C.unbind(0), "TC": self.TC.unbind(0)}

    def forward_step(self, t, xw_t, h, w_hh_t, b_hh, y_t) -> None:
        v = self.views
        hw = native.linear(h, w_hh_t.t())
        if self.p.master:
            self.lib.master_forward(
                self.batch, self.hid, self.chunk, _ptr(xw_t), _ptr(hw), _ptr(v["A"][t]),
                _ptr(v["C"][t]), _ptr(v["C"][t + 1]), _ptr(v["TC"][t]), _ptr(y_t),
            )  # fmt: skip
            return
        self.lib.lstm_forward(
            self.mode, self.batch, self.hid, _ptr(xw_t), _ptr(hw), _ptr(v["A"][t]),
            _ptr(v["C"][t]), _ptr(v["C"][t + 1]), _ptr(v["TC"][t]), _ptr(y_t),
        )  # fmt: skip

    def coefficients(self, t0, t1, h_prev):
        return None  # native.c works from the stored activations directly

    def backward_step(self, t, j, co, dh, dy_t, dz, _dzh):
        v = self.views
        if self.p.master:
            self.lib.master_backward(
                self.batch, self.hid, self.chunk, _ptr(v["A"][t]), _ptr(v["C"][t]),
                _ptr(v["TC"][t]), _ptr(dh), None if dy_t is None else _ptr(dy_t),
                _ptr(self.dc), _ptr(dz),
            )  # fmt: skip
            return None
        self.lib.lstm_backward(
            self.mode, self.batch, self.hid, _ptr(v["A"][t]), _ptr(v["C"][t]), _ptr(v["TC"][t]),
            _ptr(dh), None if dy_t is None else _ptr(dy_t), _ptr(self.dc), _ptr(dz),
        )  # fmt: skip
        return None

    def init_grad(self, drest) -> None:
        (dc,) = drest
        shape = (self.batch, self.hid)
        self.dc = self.C.new_zeros(shape) if dc is None else dc.contiguous().clone()

    def forward_sequence(self, xw, first, w_hh, b_hh, ys) -> None:
        t_len, batch, g = xw.shape
        hid = self.hid
        w_hh_t = native.transposed(w_hh)
        work = xw.new_empty(batch * g + batch * hid)
        self.lib.lstm_sequence_forward(
            self.mode, t_len, batch, hid, max(1, self.chunk), _ptr(xw), _ptr(w_hh_t),
            _opt_ptr(first), _ptr(self.A), _ptr(self.C), _ptr(self.TC), _ptr(ys), _ptr(work),
            self.gemm,
        )  # fmt: skip

    def backward_sequence(self, t0, t1, co, dh, dy, first, w_hh, dzx, dzh) -> Tensor:
        self.lib.lstm_sequence_backward(
            self.mode, t1 - t0, self.batch, self.hid, max(1, self.chunk), _ptr(self.A[t0]),
            _ptr(self.C[t0]), _ptr(self.TC[t0]), _opt_ptr(first, t0), _opt_ptr(dy, t0),
            _ptr(w_hh), _ptr(dh), _ptr(self.dc), _ptr(dzx), self.gemm,
        )  # fmt: skip
        return dh


class NativeGRUKernel(_NativeMatmuls, GRUKernel):
    """GRUKernel whose per-step gate math, forward and backward, is one call into native.c."""

    native = True
    chunk_elements = _NATIVE_CHUNK_ELEMENTS

    def __init__(self, preset: Preset, hidden_size: int, lib):
        super().__init__(preset, hidden_size)
        self.lib = lib

    def allocate(self, t_len, batch, rest0, like, g) -> None:
        self.batch, self.hid = batch, like.shape[-1]
        self.A = like.new_empty(t_len, batch, g)  # activations; n's block holds n
        self.gh: list[Tensor] = [like] * t_len  # W_hh h_{t-1} + b_hh per step, for r's gradient

    @functools.cached_property
    def views(self) -> dict[str, tuple[Tensor, ...]]:
        """Per-step views of the workspace (the step-by-step loop only)."""
        return {"A": self.A.unbind(0)}

    def forward_step(self, t, xw_t, h, w_hh_t, b_hh, y_t) -> None:
        gh = self.gh[t] = native.linear(h, w_hh_t.t(), b_hh)
        self.lib.gru_forward(
            int(self.refine), self.batch, self.hid, _ptr(xw_t), _ptr(gh), _ptr(h),
            _ptr(self.views["A"][t]), _ptr(y_t),
        )  # fmt: skip

    def coefficients(self, t0, t1, h_prev):
        return h_prev  # [n, B, H]: the states the chunk's steps started from

    def backward_step(self, t, j, co, dh, dy_t, dzx, dzh):
        v = self.views
        self.lib.gru_backward(
            int(self.refine), self.batch, self.hid, _ptr(v["A"][t]), _ptr(self.gh[t]),
            _ptr(co[j]), _ptr(dh), None if dy_t is None else _ptr(dy_t), _ptr(dzx), _ptr(dzh),
            _ptr(self.dprev),
        )  # fmt: skip
        return self.dprev

    def init_grad(self, drest) -> None:
        self.dprev = self.A.new_empty(self.batch, self.hid)  # g_t dL/dh_t, rewritten per step

    def forward_sequence(self, xw, first, w_hh, b_hh, ys) -> None:
        t_len, batch, g = xw.shape
        self.GH = xw.new_empty(t_len, batch, g)
        w_hh_t = native.transposed(w_hh)
        work = xw.new_empty(batch, self.hid)
        self.lib.gru_sequence_forward(
            int(self.refine), t_len, batch, self.hid, _ptr(xw), _ptr(w_hh_t), _opt_ptr(b_hh),
            _opt_ptr(first), _ptr(self.A), _ptr(self.GH), _ptr(ys), _ptr(work), self.gemm,
        )  # fmt: skip

    def backward_sequence(self, t0, t1, co, dh, dy, first, w_hh, dzx, dzh) -> Tensor:
        self.lib.gru_sequence_backward(
            int(self.refine), t1 - t0, self.batch, self.hid, _ptr(self.A[t0]), _ptr(self.GH[t0]),
            _ptr(co), _opt_ptr(first, t0), _opt_ptr(dy, t0), _ptr(w_hh), _ptr(dh), _ptr(dzx),
            _ptr(dzh), _ptr(self.dprev), self.gemm,
        )  # fmt: skip
        return dh


_NATIVE_NAMES = ("x", "is_first", "w_ih", "w_hh", "b_ih", "b_hh", "h0")


def check_native_inputs(x, is_first, w_ih, w_hh, b_ih, b_hh, h0, *rest0) -> None:
    """ValueError unless the tensors are what native.c reads through raw pointers: real
    (not fake or meta) float32 CPU tensors of matching shapes. The kernels themselves trust
    these shapes, so a wrong one would read or write outside a buffer. (On every call, acting
    included: a few microseconds.)"""
    t_len, batch, in_size = x.shape
    g, hid = w_hh.shape
    state = (batch, hid)
    expected = (
        (x, (t_len, batch, in_size)), (is_first, (t_len, batch)), (w_ih, (g, in_size)),
        (w_hh, (g, hid)), (b_ih, (g,)), (b_hh, (g,)), (h0, state), *((r, state) for r in rest0),
    )  # fmt: skip
    for i, (t, shape) in enumerate(expected):
        if t is None and i == 5:  # no b_hh (the LSTM family)
            continue
        dtype = torch.bool if i == 1 else torch.float32
        if (
            (type(t) is not Tensor and type(t) is not torch.nn.Parameter)
            or t.device.type != "cpu"
            or t.dtype != dtype
            or t.shape != shape
        ):
            name = _NATIVE_NAMES[i] if i < len(_NATIVE_NAMES) else f"state[{i - 6}]"
            raise ValueError(
                f"native kernels: {name} must be a plain CPU {str(dtype)[6:]} tensor of shape "
                f"{shape}, got {type(t).__name__} {tuple(getattr(t, 'shape', ()))} "
                f"{getattr(t, 'dtype', None)} on {getattr(t, 'device', None)}"
            )
