"""GPU backend of the sigmoid-gated cores in Triton: one persistent kernel per direction.

Covers lstm, c-lstm (untied LSTM), u-lstm (tied), r-/ur-lstm (tied with the refine gate), gru
and ur-gru (paper.md 1.1-1.7); the cumax cores keep the PyTorch fused path.

Layout (time-major, as everywhere): the input projection xw = x W_ih^T + b_ih of all T steps is
one matmul outside the kernels. The forward kernel then runs all T steps for a block of BB
batch rows: per step it applies the ``is_first`` reset (h and c multiplied by keep = 1 -
is_first), computes the recurrent term of every gate with ``tl.dot`` over tiles of BN hidden
units (fp32 accumulation; bf16 operands for bf16 inputs), the gate math in fp32, and writes h_t,
c_t and the gate activations for the backward. The state goes through global memory between
steps (it stays in L1/L2) with a CTA barrier, so that H up to 512 fits the on-chip budget. The
backward kernel runs the steps in reverse for the same batch blocks, carrying dh and dc, and
writes the gradients of the pre-activations dZ; the weight gradients and dx are then three large
matmuls (dW_hh = dZh^T h_prev, dW_ih = dZx^T x, dx = dZx W_ih) outside.

The kernels also run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, set before
this module is imported), which is how CI tests them against the reference cells.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from rlgate.cores.triton_modes import GRU, LSTM, REFINE, TIED, URGRU, interpreted

# the modes as compile-time constants inside the kernels
_LSTM, _TIED, _REFINE, _URGRU = (tl.constexpr(m) for m in (LSTM, TIED, REFINE, URGRU))

#: batch rows per program (tl.dot needs >= 16)
BLOCK_B = 16


@triton.jit
def _sig(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _tanh(z):
    return 2.0 / (1.0 + tl.exp(-2.0 * z)) - 1.0


@triton.jit
def _rec_t(hd, w_ptr, k, H, ri, mi, rj, mj, PRECISION: tl.constexpr):
    """hd [BB, BH] @ W_k^T[:, rj] -> [BB, BN]: the recurrent term of gate k for units rj."""
    w = tl.load(
        w_ptr + (k * H + rj[None, :]) * H + ri[:, None], mask=mi[:, None] & mj[None, :], other=0.0
    )
    return tl.dot(hd, w.to(hd.dtype), input_precision=PRECISION)


@triton.jit
def _rec_back(
    dz,
    w_ptr,
    k,
    H,
    ri,
    mi,
    rj,
    mj,
    OPER_DTYPE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """dz_k [BB, BN] @ W_k[rj, :] -> [BB, BH]: gate k's share of dL/dh_{t-1}."""
    w = tl.load(
        w_ptr + (k * H + rj[:, None]) * H + ri[None, :], mask=mj[:, None] & mi[None, :], other=0.0
    )
    dz = dz.to(OPER_DTYPE).to(DOT_DTYPE)
    return tl.dot(dz, w.to(DOT_DTYPE), input_precision=PRECISION)


@triton.jit
def _forward_kernel(
    xw_ptr,  # [T, B, G] fp32: x W_ih^T + b_ih
    w_ptr,  # [G, H] W_hh (dot dtype)
    bhh_ptr,  # [G] fp32 (GRU family)
    keep_ptr,  # [T, B] fp32: 1 - is_first
    hs_ptr,  # [T + 1, B, H] fp32: hs[0] = h0 (given); writes hs[t + 1] = h_t
    cs_ptr,  # [T + 1, B, H] fp32: cs[0] = c0 (_LSTM family)
    act_ptr,  # [T, B, G] fp32: gate activations (u / n as tanh)
    ghn_ptr,  # [T, B, H] fp32: W_hn h + b_hn (GRU family)
    T,
    B,
    H: tl.constexpr,
    G: tl.constexpr,
    MODE: tl.constexpr,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BN: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    OPER_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    mb = rb < B
    ri = tl.arange(0, BH)
    mi = ri < H
    for t in range(T):
        keep = tl.load(keep_ptr + t * B + rb, mask=mb, other=0.0)[:, None]
        h_all = tl.load(
            hs_ptr + t * B * H + rb[:, None] * H + ri[None, :],
            mask=mb[:, None] & mi[None, :],
            other=0.0,
        )
        hd = (h_all * keep).to(OPER_DTYPE).to(DOT_DTYPE)
        for jt in range(BH // BN):
            rj = jt * BN + tl.arange(0, BN)
            mj = rj < H
            m2 = mb[:, None] & mj[None, :]
            o_h = rb[:, None] * H + rj[None, :]  # offsets in a [B, H] slab
            o_g = rb[:, None] * G + rj[None, :]  # gate 0's offsets in a [B, G] slab
            xw = xw_ptr + t * B * G
            act = act_ptr + t * B * G
            if MODE <= _REFINE:
                c_prev = tl.load(cs_ptr + t * B * H + o_h, mask=m2, other=0.0) * keep
                if MODE == _TIED:
                    f = _sig(
                        tl.load(xw + o_g, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 0, H, ri, mi, rj, mj, PRECISION)
                    )
                    u = _tanh(
                        tl.load(xw + o_g + H, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 1, H, ri, mi, rj, mj, PRECISION)
                    )
                    o = _sig(
                        tl.load(xw + o_g + 2 * H, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 2, H, ri, mi, rj, mj, PRECISION)
                    )
                    c = f * c_prev + (1.0 - f) * u
                    tl.store(act + o_g, f, mask=m2)
                    tl.store(act + o_g + H, u, mask=m2)
                    tl.store(act + o_g + 2 * H, o, mask=m2)
                else:
                    a = _sig(
                        tl.load(xw + o_g, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 0, H, ri, mi, rj, mj, PRECISION)
                    )
                    f = _sig(
                        tl.load(xw + o_g + H, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 1, H, ri, mi, rj, mj, PRECISION)
                    )
                    u = _tanh(
                        tl.load(xw + o_g + 2 * H, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 2, H, ri, mi, rj, mj, PRECISION)
                    )
                    o = _sig(
                        tl.load(xw + o_g + 3 * H, mask=m2, other=0.0)
                        + _rec_t(hd, w_ptr, 3, H, ri, mi, rj, mj, PRECISION)
                    )
                    if MODE == _LSTM:  # a is the input gate i
                        c = f * c_prev + a * u
                    else:  # a is the refine gate r: g = f^2 + 2 r f (1 - f)
                        g = f * f + 2.0 * a * f * (1.0 - f)
                        c = g * c_prev + (1.0 - g) * u
                    tl.store(act + o_g, a, mask=m2)
                    tl.store(act + o_g + H, f, mask=m2)
                    tl.store(act + o_g + 2 * H, u, mask=m2)
                    tl.store(act + o_g + 3 * H, o, mask=m2)
                h = o * _tanh(c)
                tl.store(cs_ptr + (t + 1) * B * H + o_h, c, mask=m2)
            else:
                h_prev = tl.load(hs_ptr + t * B * H + o_h, mask=m2, other=0.0) * keep
                b = bhh_ptr + rj[None, :]
                gh_r = _rec_t(hd, w_ptr, 0, H, ri, mi, rj, mj, PRECISION) + tl.load(
                    b, mask=mj[None, :], other=0.0
                )
                gh_z = _rec_t(hd, w_ptr, 1, H, ri, mi, rj, mj, PRECISION) + tl.load(
                    b + H, mask=mj[None, :], other=0.0
                )
                gh_n = _rec_t(hd, w_ptr, 2, H, ri, mi, rj, mj, PRECISION) + tl.load(
                    b + 2 * H, mask=mj[None, :], other=0.0
                )
                r = _sig(tl.load(xw + o_g, mask=m2, other=0.0) + gh_r)
                z = _sig(tl.load(xw + o_g + H, mask=m2, other=0.0) + gh_z)
                n = _tanh(tl.load(xw + o_g + 2 * H, mask=m2, other=0.0) + r * gh_n)
                g = z
                if MODE == _URGRU:
                    gh_q = _rec_t(hd, w_ptr, 3, H, ri, mi, rj, mj, PRECISION) + tl.load(
                        b + 3 * H, mask=mj[None, :], other=0.0
                    )
                    q = _sig(tl.load(xw + o_g + 3 * H, mask=m2, other=0.0) + gh_q)
                    g = z * z + 2.0 * q * z * (1.0 - z)
                    tl.store(act + o_g + 3 * H, q, mask=m2)
                h = g * h_prev + (1.0 - g) * n
                tl.store(act + o_g, r, mask=m2)
                tl.store(act + o_g + H, z, mask=m2)
                tl.store(act + o_g + 2 * H, n, mask=m2)
                tl.store(ghn_ptr + t * B * H + o_h, gh_n, mask=m2)
            tl.store(hs_ptr + (t + 1) * B * H + o_h, h, mask=m2)
        tl.debug_barrier()  # h_t complete before step t + 1 reads it


@triton.jit
def _backward_kernel(
    w_ptr,  # [G, H] W_hh (dot dtype)
    keep_ptr,  # [T, B]
    hs_ptr,  # [T + 1, B, H] (GRU family: h_{t-1})
    cs_ptr,  # [T + 1, B, H] (_LSTM family)
    act_ptr,  # [T, B, G]
    ghn_ptr,  # [T, B, H]
    dy_ptr,  # [T, B, H] fp32: dL/dy
    dzx_ptr,  # [T, B, G] out: dL/d(input-side pre-activations)
    dzh_ptr,  # [T, B, G] out: recurrent side (GRU family; the LSTMs use dzx)
    dh_ptr,  # [2, B, H] fp32: dh double buffer, [0] holds dL/dh_T on entry
    dc_ptr,  # [2, B, H] fp32: dc double buffer, [0] holds dL/dc_T on entry
    ddir_ptr,  # [B, H] fp32 scratch: the GRU's direct dL/dh_{t-1} = dh g
    T,
    B,
    H: tl.constexpr,
    G: tl.constexpr,
    MODE: tl.constexpr,
    BB: tl.constexpr,
    BH: tl.constexpr,
    BN: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    OPER_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rb = tl.program_id(0) * BB + tl.arange(0, BB)
    mb = rb < B
    ri = tl.arange(0, BH)
    mi = ri < H
    for s in range(T):
        t = T - 1 - s
        rd = (s % 2) * B * H
        wr = B * H - rd
        keep = tl.load(keep_ptr + t * B + rb, mask=mb, other=0.0)[:, None]
        acc = tl.zeros((BB, BH), dtype=tl.float32)
        for jt in range(BH // BN):
            rj = jt * BN + tl.arange(0, BN)
            mj = rj < H
            m2 = mb[:, None] & mj[None, :]
            o_h = rb[:, None] * H + rj[None, :]
            o_g = rb[:, None] * G + rj[None, :]
            act = act_ptr + t * B * G
            dzx = dzx_ptr + t * B * G
            dh = tl.load(dh_ptr + rd + o_h, mask=m2, other=0.0)
            dh += tl.load(dy_ptr + t * B * H + o_h, mask=m2, other=0.0)
            if MODE <= _REFINE:
                c = tl.load(cs_ptr + (t + 1) * B * H + o_h, mask=m2, other=0.0)
                c_prev = tl.load(cs_ptr + t * B * H + o_h, mask=m2, other=0.0) * keep
                tc = _tanh(c)
                if MODE == _TIED:
                    f = tl.load(act + o_g, mask=m2, other=0.0)
                    u = tl.load(act + o_g + H, mask=m2, other=0.0)
                    o = tl.load(act + o_g + 2 * H, mask=m2, other=0.0)
                else:
                    a = tl.load(act + o_g, mask=m2, other=0.0)
                    f = tl.load(act + o_g + H, mask=m2, other=0.0)
                    u = tl.load(act + o_g + 2 * H, mask=m2, other=0.0)
                    o = tl.load(act + o_g + 3 * H, mask=m2, other=0.0)
                dc = tl.load(dc_ptr + rd + o_h, mask=m2, other=0.0) + dh * o * (1.0 - tc * tc)
                dz_o = dh * tc * o * (1.0 - o)
                du = dc * (1.0 - f)  # _TIED's; the others below
                if MODE == _TIED:
                    dz_f = dc * (c_prev - u) * f * (1.0 - f)
                    dz_u = du * (1.0 - u * u)
                    dc_prev = dc * f
                    tl.store(dzx + o_g, dz_f, mask=m2)
                    tl.store(dzx + o_g + H, dz_u, mask=m2)
                    tl.store(dzx + o_g + 2 * H, dz_o, mask=m2)
                    acc += _rec_back(
                        dz_f, w_ptr, 0, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                    acc += _rec_back(
                        dz_u, w_ptr, 1, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                    acc += _rec_back(
                        dz_o, w_ptr, 2, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                else:
                    if MODE == _LSTM:
                        dz_a = dc * u * a * (1.0 - a)  # input gate
                        dz_f = dc * c_prev * f * (1.0 - f)
                        du = dc * a
                        dc_prev = dc * f
                    else:  # refine: g = f^2 + 2 r f (1 - f)
                        g = f * f + 2.0 * a * f * (1.0 - f)
                        dg = dc * (c_prev - u)
                        df = dg * (2.0 * f + 2.0 * a * (1.0 - 2.0 * f))
                        dz_a = dg * 2.0 * f * (1.0 - f) * a * (1.0 - a)
                        dz_f = df * f * (1.0 - f)
                        du = dc * (1.0 - g)
                        dc_prev = dc * g
                    dz_u = du * (1.0 - u * u)
                    tl.store(dzx + o_g, dz_a, mask=m2)
                    tl.store(dzx + o_g + H, dz_f, mask=m2)
                    tl.store(dzx + o_g + 2 * H, dz_u, mask=m2)
                    tl.store(dzx + o_g + 3 * H, dz_o, mask=m2)
                    acc += _rec_back(
                        dz_a, w_ptr, 0, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                    acc += _rec_back(
                        dz_f, w_ptr, 1, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                    acc += _rec_back(
                        dz_u, w_ptr, 2, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                    acc += _rec_back(
                        dz_o, w_ptr, 3, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                tl.store(dc_ptr + wr + o_h, dc_prev * keep, mask=m2)
            else:
                r = tl.load(act + o_g, mask=m2, other=0.0)
                z = tl.load(act + o_g + H, mask=m2, other=0.0)
                n = tl.load(act + o_g + 2 * H, mask=m2, other=0.0)
                gh_n = tl.load(ghn_ptr + t * B * H + o_h, mask=m2, other=0.0)
                h_prev = tl.load(hs_ptr + t * B * H + o_h, mask=m2, other=0.0) * keep
                dzh = dzh_ptr + t * B * G
                dg = dh * (h_prev - n)
                g = z
                dz_z = dg * z * (1.0 - z)
                if MODE == _URGRU:
                    q = tl.load(act + o_g + 3 * H, mask=m2, other=0.0)
                    g = z * z + 2.0 * q * z * (1.0 - z)
                    dz_z = dg * (2.0 * z + 2.0 * q * (1.0 - 2.0 * z)) * z * (1.0 - z)
                    dz_q = dg * 2.0 * z * (1.0 - z) * q * (1.0 - q)
                    tl.store(dzx + o_g + 3 * H, dz_q, mask=m2)
                    tl.store(dzh + o_g + 3 * H, dz_q, mask=m2)
                    acc += _rec_back(
                        dz_q, w_ptr, 3, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                    )
                dn = dh * (1.0 - g) * (1.0 - n * n)  # d(pre-activation of n)
                dz_r = dn * gh_n * r * (1.0 - r)
                tl.store(dzx + o_g, dz_r, mask=m2)
                tl.store(dzx + o_g + H, dz_z, mask=m2)
                tl.store(dzx + o_g + 2 * H, dn, mask=m2)
                tl.store(dzh + o_g, dz_r, mask=m2)
                tl.store(dzh + o_g + H, dz_z, mask=m2)
                tl.store(dzh + o_g + 2 * H, dn * r, mask=m2)
                acc += _rec_back(
                    dz_r, w_ptr, 0, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                )
                acc += _rec_back(
                    dz_z, w_ptr, 1, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                )
                acc += _rec_back(
                    dn * r, w_ptr, 2, H, ri, mi, rj, mj, OPER_DTYPE, DOT_DTYPE, PRECISION
                )
                tl.store(ddir_ptr + o_h, dh * g, mask=m2)
        tl.debug_barrier()  # every tile's direct term is written
        m_all = mb[:, None] & mi[None, :]
        o_all = rb[:, None] * H + ri[None, :]
        if MODE > _REFINE:
            acc += tl.load(ddir_ptr + o_all, mask=m_all, other=0.0)
        tl.store(dh_ptr + wr + o_all, acc * keep, mask=m_all)
        tl.debug_barrier()  # dh_{t-1} complete before step t - 1 reads it


def _block_n(block_h: int, dot_dtype: torch.dtype) -> int:
    """Hidden units per tile: the [BH, BN] weight tile must fit shared memory."""
    budget = 64 * 1024 // (4 if dot_dtype == torch.float32 else 2)  # elements per tile
    return max(16, min(block_h, budget // block_h, 64))


class _TritonRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, x, is_first, w_ih, w_hh, b_ih, b_hh, h0, *rest0):
        t_len, batch, in_size = x.shape
        g, hid = w_hh.shape
        cdt = x.dtype
        xw = torch.addmm(b_ih.to(cdt), x.reshape(t_len * batch, in_size), w_ih.to(cdt).t())
        xw = xw.view(t_len, batch, g).float()
        keep = (~is_first).float().contiguous()
        f32 = dict(device=x.device, dtype=torch.float32)
        hs = torch.empty(t_len + 1, batch, hid, **f32)
        hs[0].copy_(h0)
        lstm = mode <= REFINE
        cs = torch.empty(t_len + 1, batch, hid, **f32) if lstm else hs[:1]
        if lstm:
            cs[0].copy_(rest0[0])
        act = torch.empty(t_len, batch, g, **f32)
        ghn = torch.empty(t_len, batch, hid, **f32) if not lstm else act[:1]
        bhh = b_hh.float().contiguous() if b_hh is not None else act.new_zeros(1)
        w = w_hh.to(cdt).contiguous()
        meta = _meta(hid, g, mode, cdt)
        grid = (triton.cdiv(batch, BLOCK_B),)
        _forward_kernel[grid](xw, w, bhh, keep, hs, cs, act, ghn, t_len, batch, **meta)
        ctx.mode, ctx.meta, ctx.has_b_hh = mode, meta, b_hh is not None
        ctx.state_dtypes = (h0.dtype, *(r.dtype for r in rest0))
        ctx.save_for_backward(x, keep, w_ih, w, hs, cs, act, ghn)
        y = hs[1:] if cdt == torch.float32 else hs[1:].to(cdt)
        final = (hs[-1].to(h0.dtype), *((cs[-1].to(rest0[0].dtype),) if lstm else ()))
        return (y, *final)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_t, *drest_t):
        x, keep, w_ih, w, hs, cs, act, ghn = ctx.saved_tensors
        mode, meta = ctx.mode, ctx.meta
        t_len, batch, in_size = x.shape
        g, hid = w.shape
        lstm = mode <= REFINE
        f32 = dict(device=x.device, dtype=torch.float32)
        dy = torch.zeros(t_len, batch, hid, **f32) if dy is None else dy.float().contiguous()
        dh = torch.zeros(2, batch, hid, **f32)
        dc = torch.zeros(2, batch, hid, **f32)
        if dh_t is not None:
            dh[0].copy_(dh_t)
        if lstm and drest_t and drest_t[0] is not None:
            dc[0].copy_(drest_t[0])
        dzx = torch.empty(t_len, batch, g, **f32)
        dzh = dzx if lstm else torch.empty(t_len, batch, g, **f32)
        ddir = torch.zeros(batch, hid, **f32)
        grid = (triton.cdiv(batch, BLOCK_B),)
        _backward_kernel[grid](
            w, keep, hs, cs, act, ghn, dy, dzx, dzh, dh, dc, ddir, t_len, batch, **meta
        )
        cdt = x.dtype
        rows = t_len * batch
        h_prev = (hs[:-1] * keep.unsqueeze(-1)).view(rows, hid)
        dzx2, dzh2 = dzx.view(rows, g), dzh.view(rows, g)
        dw_hh = (dzh2.t() @ h_prev).to(w_ih.dtype)
        x2 = x.reshape(rows, in_size)
        dw_ih = (dzx2.to(cdt).t() @ x2).to(w_ih.dtype)
        db_ih = dzx2.sum(0).to(w_ih.dtype)
        db_hh = dzh2.sum(0).to(w_ih.dtype) if ctx.has_b_hh else None
        dx = None
        if ctx.needs_input_grad[1]:
            dx = (dzx2.to(cdt) @ w_ih.to(cdt)).view(t_len, batch, in_size).to(x.dtype)
        last = t_len % 2  # the buffer the last step wrote
        dh0 = dh[last].to(ctx.state_dtypes[0])
        drest = (dc[last].to(ctx.state_dtypes[1]),) if lstm else ()
        return (None, dx, None, dw_ih, dw_hh, db_ih, db_hh, dh0, *drest)


def _meta(hid: int, g: int, mode: int, cdt: torch.dtype) -> dict:
    block_h = max(16, triton.next_power_of_2(hid))
    block_n = _block_n(block_h, cdt)
    fp32 = cdt == torch.float32
    tf32 = fp32 and torch.backends.cuda.matmul.allow_tf32 and not interpreted()
    return dict(
        H=hid,
        G=g,
        MODE=mode,
        BB=BLOCK_B,
        BH=block_h,
        BN=block_n,
        # bf16 operands, fp32 accumulation; the interpreter's bf16 dot is broken (Triton 3.9),
        # so there the operands are rounded to bf16 and multiplied in fp32 (the same products)
        OPER_DTYPE=tl.float32 if fp32 else tl.bfloat16,
        DOT_DTYPE=tl.float32 if fp32 or interpreted() else tl.bfloat16,
        PRECISION="tf32" if tf32 else "ieee",
        num_warps=4 if block_h <= 64 else 8,
        num_stages=1,  # no multi-buffered weight tiles: they would not fit shared memory
    )


def run(
    mode: int,
    x: Tensor,
    is_first: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor | None,
    state0: tuple[Tensor, ...],
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run a sigmoid-gated core's recurrence with the Triton kernels.

    Args:
        mode: LSTM, TIED, REFINE, GRU or URGRU (the gate blocks of W, see the cores).
        x: [T, B, I], fp32 or bf16; is_first: [T, B] bool.
        w_ih: [G, I]; w_hh: [G, H]; b_ih: [G]; b_hh: [G] (GRU family) or None.
        state0: (h0,) or (h0, c0), [B, H] each.

    Returns:
        (y [T, B, H] in x's dtype, final state in state0's dtypes); the state is carried in fp32.
    """
    out = _TritonRecurrence.apply(mode, x, is_first, w_ih, w_hh, b_ih, b_hh, *state0)
    return out[0], tuple(out[1:])


def compile_for(
    capability: int,
    mode: int,
    hidden: int,
    dtype: torch.dtype = torch.float32,
    tf32: bool = False,
) -> dict[str, int]:
    """Compile both kernels ahead of time for an NVIDIA GPU of compute ``capability`` (90: H100,
    80: A100); needs no GPU (Triton bundles ptxas). Returns each kernel's shared memory bytes.

    This is how CI checks, without a GPU, that the kernels compile and fit on chip; it must run
    without TRITON_INTERPRET (the interpreter has nothing to compile).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    g = (3 if mode in (TIED, GRU) else 4) * hidden
    meta = _meta(hidden, g, mode, dtype)
    if tf32 and dtype == torch.float32:
        meta["PRECISION"] = "tf32"
    options = {"num_warps": meta.pop("num_warps"), "num_stages": meta.pop("num_stages")}
    shared = {}
    for kernel in (_forward_kernel, _backward_kernel):
        signature, constexprs = {}, {}
        for name in kernel.arg_names:
            if name in meta:
                signature[name], constexprs[name] = "constexpr", meta[name]
            elif name in ("T", "B"):
                signature[name] = "i32"
            else:
                signature[name] = "*bf16" if name == "w_ptr" and dtype != torch.float32 else "*fp32"
        src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)
        shared[kernel.fn.__name__] = compiled.metadata.shared
    return shared
