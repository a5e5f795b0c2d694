"""The fused recurrence: one autograd Function that runs a kernel's cell math over a whole
sequence (``rlgate.cores.fused`` describes the kernels), with the ``is_first`` resets applied
inside and a hand-written BPTT in chunks, last chunk first.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rlgate.cores import native
from rlgate.cores.fused_native import check_native_inputs, native_loop


def _resets(is_first: Tensor, dtype: torch.dtype) -> tuple[Tensor, list[bool]]:
    """keep [T, B, 1] (0 where a column starts an episode, else 1) and, per step, whether any
    column does."""
    return (~is_first).to(dtype).unsqueeze(-1), is_first.any(dim=1).tolist()


def _forward(kernel, x, is_first, w_ih, w_hh, b_ih, b_hh, h0, *rest0):
    """The forward loop: (outputs, what the backward needs). Shared by ``_Recurrence`` and the
    no-grad path of ``run`` (acting), which skips the autograd Function's overhead."""
    if kernel.native:
        check_native_inputs(x, is_first, w_ih, w_hh, b_ih, b_hh, h0, *rest0)
    t_len, batch, in_size = x.shape
    g, hid = w_hh.shape
    xw = kernel.project(x.reshape(t_len * batch, in_size), w_ih, b_ih).view(t_len, batch, g)
    kernel.allocate(t_len, batch, rest0, h0, g)
    ys = x.new_empty(t_len + 1, batch, hid)  # ys[0] = h0, ys[t + 1] = h_t
    ys[0].copy_(h0)
    # the whole loop in one native call where it can (see native_loop)
    loop = native_loop(batch, hid, g) if kernel.native else "steps"
    sequence = loop != "steps"
    keep = resets = None  # the step loop's, and the backward's (_resets)
    if sequence:
        kernel.gemm = native.blas_sgemm() if loop == "blas" else None
        first = is_first.contiguous() if bool(is_first.any()) else None
        kernel.forward_sequence(xw, first, w_hh.contiguous(), b_hh, ys)
    else:
        first = None
        keep, resets = _resets(is_first, x.dtype)
        w_hh_t = w_hh.t()
        for t, xw_t in enumerate(xw.unbind(0)):
            h = ys[t]
            if resets[t]:
                h = h * keep[t]
                kernel.reset(t, keep[t])
            kernel.forward_step(t, xw_t, h, w_hh_t, b_hh, ys[t + 1])
    out = (ys[1:], ys[-1].clone(), *kernel.final_rest())
    return out, (resets, sequence, first, keep, ys)


def _grad_weight(acc: Tensor | None, dz: Tensor, inp: Tensor) -> Tensor:
    """acc + dz^T inp for dz [N, G], inp [N, I] -> [G, I]; acc None for the first chunk, whose
    product runs as (inp^T dz)^T: MKL computes that layout ~1.2-1.4x faster from cold caches
    than dz^T inp into zeros, with the same sums (bit for bit on the sizes measured)."""
    if acc is None:
        return torch.mm(inp.t(), dz).t().contiguous()
    return acc.addmm_(dz.t(), inp)


class _Recurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, x, is_first, w_ih, w_hh, b_ih, b_hh, h0, *rest0):
        out, (resets, sequence, first, keep, ys) = _forward(
            kernel, x, is_first, w_ih, w_hh, b_ih, b_hh, h0, *rest0
        )
        if resets is None:  # the whole-sequence loop needed only the flags
            keep, resets = _resets(is_first, x.dtype)
        ctx.kernel, ctx.resets, ctx.sequence, ctx.first = kernel, resets, sequence, first
        ctx.has_b_hh = b_hh is not None
        ctx.save_for_backward(x, keep, w_ih, w_hh, ys)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_t, *drest_t):
        x, keep, w_ih, w_hh, ys = ctx.saved_tensors
        kernel, resets = ctx.kernel, ctx.resets
        t_len, batch, in_size = x.shape
        g, hid = w_hh.shape
        # Steps are processed in chunks, last chunk first. Per chunk: the per-unit factors for
        # all its steps at once (few large ops instead of many small ones), the step recursion,
        # then the chunk's share of the weight gradients as accumulating matmuls. The chunk
        # buffers are small and reused, so they stay in cache and need no large allocation.
        chunk = min(t_len, max(1, kernel.chunk_elements // (batch * hid)))
        dzx_buf = x.new_empty(chunk, batch, g)
        dzh_buf = dzx_buf if kernel.same_dz else x.new_empty(chunk, batch, g)
        dw_ih = dw_hh = None
        db_ih = w_ih.new_zeros(g)
        db_hh = w_ih.new_zeros(g) if ctx.has_b_hh else None
        dx = torch.empty_like(x) if ctx.needs_input_grad[1] else None
        kernel.init_grad(drest_t)
        dh = torch.zeros_like(ys[0]) if dh_t is None else dh_t.contiguous()
        if dy is not None and kernel.native:
            dy = dy.contiguous()  # native.c reads rows; the gradient of a sum comes expanded
        if ctx.sequence:
            dh = dh.clone()  # native.c updates it in place
            w_hh_c = w_hh.contiguous()
        for t1 in range(t_len, 0, -chunk):
            t0 = max(0, t1 - chunk)
            n = t1 - t0
            # h_{t-1} as step t saw it (after its reset): [n, B, H]
            h_prev = ys[t0:t1] * keep[t0:t1] if any(resets[t0:t1]) else ys[t0:t1]
            co = kernel.coefficients(t0, t1, h_prev)
            dzx, dzh = dzx_buf[:n], dzh_buf[:n]
            if ctx.sequence:
                dh = kernel.backward_sequence(t0, t1, co, dh, dy, ctx.first, w_hh_c, dzx, dzh)
            else:
                for j in reversed(range(n)):
                    t = t0 + j
                    dy_t = None if dy is None else dy[t]
                    dh_direct = kernel.backward_step(t, j, co, dh, dy_t, dzx[j], dzh[j])
                    dh = kernel.recurrent_grad(dzh[j], w_hh, dh_direct)
                    if resets[t]:
                        dh.mul_(keep[t])
                        kernel.reset_grad(keep[t])
            dzx2, dzh2 = dzx.reshape(n * batch, g), dzh.reshape(n * batch, g)
            dw_ih = _grad_weight(dw_ih, dzx2, x[t0:t1].reshape(n * batch, in_size))
            dw_hh = _grad_weight(dw_hh, dzh2, h_prev.reshape(n * batch, hid))
            db_ih += dzx2.sum(0)
            if db_hh is not None:
                db_hh += dzh2.sum(0)
            if dx is not None:
                torch.mm(dzx2, w_ih, out=dx[t0:t1].view(n * batch, in_size))
        drest = kernel.grad_rest(ys[0])
        return (None, dx, None, dw_ih, dw_hh, db_ih, db_hh, dh, *drest)


def run(
    kernel,
    x: Tensor,
    is_first: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor | None,
    state0: tuple[Tensor, ...],
):
    """Run the fused recurrence.

    Args:
        kernel: an ``LSTMKernel`` or ``GRUKernel`` (fresh per call: it holds the workspace).
        x: [T, B, I]; is_first: [T, B] bool.
        w_ih: [G, I]; w_hh: [G, H]; b_ih: [G]; b_hh: [G] or None.
        state0: (h0, *rest) with [B, H] tensors.

    Returns:
        (y [T, B, H], final state tuple (h_T, *rest_T)).
    """
    args = (kernel, x, is_first, w_ih, w_hh, b_ih, b_hh, *state0)
    # acting and evaluation run the same loop without the autograd Function's overhead
    out = _Recurrence.apply(*args) if torch.is_grad_enabled() else _forward(*args)[0]
    return out[0], tuple(out[1:])
