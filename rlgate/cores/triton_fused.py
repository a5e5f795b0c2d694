"""GPU backend of the sigmoid-gated cores in Triton: the autograd Function that launches the
kernels of ``triton_kernels`` (forward over all T steps, backward in reverse) around the input
projection and the weight-gradient matmuls, and ``compile_for``, which compiles them for a GPU
architecture without one (a check that they fit its shared memory).

The kernels also run on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1, set before
this module is imported), which is how CI tests them against the reference cells.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from rlgate.cores.triton_kernels import BLOCK_B, backward_kernel, forward_kernel
from rlgate.cores.triton_modes import GRU, REFINE, TIED, interpreted


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
        forward_kernel[grid](xw, w, bhh, keep, hs, cs, act, ghn, t_len, batch, **meta)
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
        backward_kernel[grid](
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
    for kernel in (forward_kernel, backward_kernel):
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
