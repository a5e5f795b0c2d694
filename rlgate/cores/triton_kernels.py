"""The Triton kernels of the sigmoid-gated cores: one persistent kernel per direction (their
launch and autograd: ``triton_fused``).

Covers lstm, c-lstm (untied LSTM), u-lstm (tied), r-/ur-lstm (tied with the refine gate), gru
and ur-gru (docs/gates.md); the cumax cores keep the PyTorch fused path.

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

import triton
import triton.language as tl

from rlgate.cores.triton_modes import LSTM, REFINE, TIED, URGRU

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
def forward_kernel(
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
def backward_kernel(
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
