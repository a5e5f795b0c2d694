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


def one_hot_linear_reference(idx: Tensor, weight: Tensor) -> Tensor:
    """[.., K] indices into V features, weight [D, V] -> [.., D]: (the count of each feature
    among the K indices) @ weight^T. With distinct indices per row, that count is the one-hot."""
    counts = F.one_hot(idx, weight.shape[1]).sum(-2).to(weight.dtype)
    return counts @ weight.t()


def _checked(code: int, idx: Tensor, vocab: int) -> None:
    if code != 0:
        raise ValueError(
            f"one-hot indices must lie in [0, {vocab}), got [{int(idx.min())}, {int(idx.max())}]"
        )


class _OneHotLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, idx: Tensor, weight: Tensor) -> Tensor:
        rows, k = idx.shape
        dim, vocab = weight.shape
        table = native.transposed(weight)  # [V, D]: row v is feature v's column
        out = weight.new_empty(rows, dim)
        lib = native.library()
        _checked(
            lib.onehot_forward(rows, k, vocab, dim, idx.data_ptr(), table.data_ptr(),
                               out.data_ptr()),
            idx, vocab,
        )  # fmt: skip
        ctx.save_for_backward(idx)
        ctx.shape = (dim, vocab)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (idx,) = ctx.saved_tensors
        dim, vocab = ctx.shape
        rows, k = idx.shape
        grad_out = grad_out.contiguous()
        grad = grad_out.new_zeros(vocab, dim)
        code = native.library().onehot_backward(
            rows, k, vocab, dim, idx.data_ptr(), grad_out.data_ptr(), grad.data_ptr()
        )
        _checked(code, idx, vocab)
        return None, grad.t()


def native_applies(weight: Tensor) -> bool:
    """Whether ``one_hot_linear`` runs natively for this weight: float32 on the CPU, and the
    native kernels build here."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and native.available()[0]


def one_hot_linear(idx: Tensor, weight: Tensor) -> Tensor:
    """``one_hot_linear_reference`` through native.c: idx [.., K] int64 (distinct per row) and
    weight [D, V] float32 on the CPU -> [.., D]; differentiable in ``weight``.

    Raises:
        ValueError: an index outside [0, V), or tensors native.c can't read (checked before
            any pointer is handed over).
    """
    if idx.dtype != torch.int64 or idx.device.type != "cpu" or weight.dim() != 2:
        raise ValueError(f"one_hot_linear: int64 CPU indices and a 2-D weight, got {idx.dtype} "
                         f"on {idx.device} and a weight of shape {tuple(weight.shape)}")  # fmt: skip
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(f"one_hot_linear: a float32 CPU weight, got {weight.dtype} "
                         f"on {weight.device}")  # fmt: skip
    lead = idx.shape[:-1]
    flat = idx.reshape(-1, idx.shape[-1]).contiguous()
    return _OneHotLinear.apply(flat, weight).reshape(*lead, weight.shape[0])
