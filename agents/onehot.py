"""A linear map of one-hot features computed from the hot indices alone.

A minigrid view is 49 cells x 3 codes: 147 ones among 980 one-hot features. The dense map
builds the [.., 980] one-hot (a zero fill and a scatter) and multiplies it by the weight,
forward and (for the weight's gradient) backward; most of that arithmetic multiplies zeros.
From the indices, the forward is a sum of 147 rows of the transposed weight and the weight's
gradient a scatter-add of the output gradient into those rows: native.c's ``onehot_forward``
and ``onehot_backward`` (float32 CPU), about a seventh of the dense arithmetic and no
[.., 980] buffer. ``one_hot_linear_reference`` is the dense map, written plainly; both give
the same result up to the order of the float sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from rlgate.cores import native


def one_hot_linear_reference(codes: Tensor, base: Tensor, weight: Tensor) -> Tensor:
    """codes [.., K] (entry j's one-hot starts at feature base[j]: feature base[j] + codes[.., j]
    is hot), base [K], weight [D, V] -> [.., D]: (the count of each feature among the K hot
    ones) @ weight^T. With distinct hot features per row, that count is the one-hot."""
    idx = base + codes.long()
    counts = F.one_hot(idx, weight.shape[1]).sum(-2).to(weight.dtype)
    return counts @ weight.t()


def _checked(code: int, codes: Tensor, base: Tensor, vocab: int) -> None:
    if code != 0:
        idx = base + codes.long()
        raise ValueError(
            f"one-hot indices must lie in [0, {vocab}), got [{int(idx.min())}, {int(idx.max())}]"
        )


def _forward(codes: Tensor, base: Tensor, weight: Tensor) -> Tensor:
    """native.c's onehot_forward: codes [R, K] uint8, base [K], weight [D, V] -> [R, D]."""
    rows, k = codes.shape
    dim, vocab = weight.shape
    table = native.transposed(weight)  # [V, D]: row v is feature v's column
    out = weight.new_empty(rows, dim)
    lib = native.library()
    _checked(
        lib.onehot_forward(rows, k, vocab, dim, codes.data_ptr(), base.data_ptr(),
                           table.data_ptr(), out.data_ptr()),
        codes, base, vocab,
    )  # fmt: skip
    return out


class _OneHotLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, codes: Tensor, base: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(codes, base)
        ctx.shape = tuple(weight.shape)
        return _forward(codes, base, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        codes, base = ctx.saved_tensors
        dim, vocab = ctx.shape
        rows, k = codes.shape
        grad_out = grad_out.contiguous()
        grad = grad_out.new_zeros(vocab, dim)
        code = native.library().onehot_backward(
            rows, k, vocab, dim, codes.data_ptr(), base.data_ptr(), grad_out.data_ptr(),
            grad.data_ptr(),
        )  # fmt: skip
        _checked(code, codes, base, vocab)
        return None, None, grad.t()


def native_applies(weight: Tensor) -> bool:
    """Whether ``one_hot_linear`` runs natively for this weight: float32 on the CPU, and the
    native kernels build here."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and native.available()[0]


def one_hot_linear(codes: Tensor, base: Tensor, weight: Tensor) -> Tensor:
    """``one_hot_linear_reference`` through native.c: codes [.., K] (uint8, or any integers
    in 0..255), base [K] int64 and weight [D, V] float32, all on the CPU -> [.., D];
    differentiable in ``weight``.

    Raises:
        ValueError: an index outside [0, V), or tensors native.c can't read (checked before
            any pointer is handed over).
    """
    k = codes.shape[-1]
    if codes.device.type != "cpu" or codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"one_hot_linear: integer CPU codes, got {codes.dtype} on {codes.device}")
    if base.shape != (k,) or base.dtype != torch.int64 or base.device.type != "cpu":
        raise ValueError(f"one_hot_linear: base must be a CPU int64 tensor of shape ({k},)")
    if weight.dim() != 2 or weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(
            f"one_hot_linear: a 2-D float32 CPU weight, got {weight.dtype} "
            f"{tuple(weight.shape)} on {weight.device}"
        )
    if codes.dtype != torch.uint8:
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > 255):
            raise ValueError("one_hot_linear: codes must lie in 0..255")
        codes = codes.to(torch.uint8)
    lead = codes.shape[:-1]
    flat = codes.reshape(-1, k).contiguous()
    # without a gradient to take (acting), the kernel alone: the autograd Function's machinery
    # costs about as much as a 64-env step's arithmetic
    run = _OneHotLinear.apply if torch.is_grad_enabled() and weight.requires_grad else _forward
    return run(flat, base.contiguous(), weight).reshape(*lead, weight.shape[0])
