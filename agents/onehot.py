"""A linear map of one-hot features computed from the hot indices alone.

A minigrid view is 49 cells x 3 codes: 147 ones among 980 one-hot features. The dense map
builds the [.., 980] one-hot (a zero fill and a scatter) and multiplies it by the weight,
forward and (for the weight's gradient) backward; most of that arithmetic multiplies zeros.
From the indices, the forward is a sum of 147 rows of the transposed weight and the weight's
gradient a scatter-add of the output gradient into those rows: native.c's ``onehot_forward``
and ``onehot_backward`` (float32 CPU), about a seventh of the dense arithmetic and no
[.., 980] buffer. ``one_hot_linear_reference`` is the dense map, written plainly; both give
the same result up to the order of the float sums.

``view_linear`` is the same idea for a view that is also gated per channel (the view-gate
heads read ``view * sigmoid(h W_g + b_g)``, one gate per channel shared by every cell) and for
a grid view (the rlgate grid tasks' 0/1 [cells, channels], 25 ones among 150 features): the
forward sums the table rows of the nonzero features, each scaled by its value and its
channel's gate; the backward scatters the output gradient into those rows and takes, for
each gate, the dot products of the output gradient with its features' rows (native.c's
``view_forward`` and ``view_backward``). ``view_linear_reference`` is the dense map.
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
    return _dense_view(codes, base, weight.shape[1]).to(weight.dtype) @ weight.t()


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


def _native_inputs(
    name: str, obs: Tensor, base: Tensor | None, weight: Tensor
) -> tuple[Tensor, Tensor | None]:
    """obs [.., K] (codes with base [K], or a grid of V = weight.shape[1] features with base
    None) and base as native.c reads them: ([rows, K] uint8 contiguous, contiguous base).
    ValueError, prefixed with ``name``, for anything it can't read."""
    if weight.dim() != 2 or weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(
            f"{name}: a 2-D float32 CPU weight, got {weight.dtype} "
            f"{tuple(weight.shape)} on {weight.device}"
        )
    if obs.device.type != "cpu" or obs.dtype.is_floating_point or obs.dtype == torch.bool:
        raise ValueError(f"{name}: integer CPU codes or view, got {obs.dtype} on {obs.device}")
    k = obs.shape[-1]
    if base is None and k != weight.shape[1]:
        raise ValueError(f"{name}: a grid of {weight.shape[1]} features per row, got {k}")
    if base is not None and (base.shape != (k,) or base.dtype != torch.int64 or base.is_cuda):
        raise ValueError(f"{name}: base must be a CPU int64 tensor of shape ({k},)")
    if obs.dtype != torch.uint8:
        if obs.numel() and (int(obs.min()) < 0 or int(obs.max()) > 255):
            raise ValueError(f"{name}: codes and view entries must lie in 0..255")
        obs = obs.to(torch.uint8)
    return obs.reshape(-1, k).contiguous(), None if base is None else base.contiguous()


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
    flat, base = _native_inputs("one_hot_linear", codes, base, weight)
    lead = codes.shape[:-1]
    # without a gradient to take (acting), the kernel alone: the autograd Function's machinery
    # costs about as much as a 64-env step's arithmetic
    run = _OneHotLinear.apply if torch.is_grad_enabled() and weight.requires_grad else _forward
    return run(flat, base, weight).reshape(*lead, weight.shape[0])


def _dense_view(obs: Tensor, base: Tensor | None, vocab: int) -> Tensor:
    """The view's features [.., vocab] float: a grid as it is, codes as the count of each
    feature among their hot ones."""
    if base is None:
        return obs.float()
    return F.one_hot(base + obs.long(), vocab).sum(-2).float()


def view_linear_reference(
    obs: Tensor, base: Tensor | None, weight: Tensor, gate: Tensor | None = None
) -> Tensor:
    """The view's features, times their channel's gate, times weight^T, written plainly.

    Args:
        obs: a grid [.., V] (its per-cell channels flattened; base None) or codes [.., K]
            (entry j's one-hot starts at feature base[j]).
        base: [K] int64, or None for a grid.
        weight: [D, V].
        gate: [.., C] or None: feature v is channel v % C of its cell.

    Returns:
        [.., D].
    """
    x = _dense_view(obs, base, weight.shape[1]).to(weight.dtype)
    if gate is not None:
        x = (x.unflatten(-1, (-1, gate.shape[-1])) * gate.unsqueeze(-2)).flatten(-2)
    return x @ weight.t()


def _view_args(obs: Tensor, base: Tensor | None, gate: Tensor | None, dim: int, vocab: int):
    """native.c's (rows, view, k, vocab, channels, dim, obs, base, gate) for flat inputs."""
    rows, k = obs.shape
    view = 2 if base is None else 1  # native.c's VIEW_GRID, VIEW_CODES
    channels = 1 if gate is None else gate.shape[-1]
    return (
        rows, view, k, vocab, channels, dim, obs.data_ptr(),
        None if base is None else base.data_ptr(), None if gate is None else gate.data_ptr(),
    )  # fmt: skip


def _view_checked(code: int, what: str, vocab: int) -> None:
    if code == -2:
        raise ValueError(f"view_linear: a hot index outside [0, {vocab})")
    if code == -3:
        raise MemoryError("view_linear: out of memory for the hot-feature lists")
    if code != 0:
        raise ValueError(f"view_linear: {what} the native kernel can't run")


class _ViewLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, obs: Tensor, base: Tensor | None, weight: Tensor, gate: Tensor | None):
        dim, vocab = weight.shape
        table = weight.detach().t().contiguous()  # [V, D]: row v is feature v's column
        out = weight.new_empty(obs.shape[0], dim)
        args = _view_args(obs, base, gate, dim, vocab)
        code = native.library().view_forward(*args, table.data_ptr(), out.data_ptr())
        _view_checked(code, "sizes", vocab)
        ctx.save_for_backward(obs, base, gate, table)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        obs, base, gate, table = ctx.saved_tensors
        vocab, dim = table.shape
        grad_out = grad_out.contiguous()
        grad = grad_out.new_zeros(vocab, dim)
        grad_gate = None if gate is None else torch.empty_like(gate)
        args = _view_args(obs, base, gate, dim, vocab)
        code = native.library().view_backward(
            *args, table.data_ptr(), grad_out.data_ptr(), grad.data_ptr(),
            None if grad_gate is None else grad_gate.data_ptr(),
        )  # fmt: skip
        _view_checked(code, "sizes", vocab)
        return None, None, grad.t(), grad_gate


def view_linear(
    obs: Tensor, base: Tensor | None, weight: Tensor, gate: Tensor | None = None
) -> Tensor:
    """``view_linear_reference`` through native.c, from the view's nonzero features alone:
    differentiable in ``weight`` and ``gate``. Inputs as the reference's, on the CPU: obs
    uint8 (or integers in 0..255), base int64, weight and gate float32.

    Raises:
        ValueError: an index outside [0, V), or tensors native.c can't read (checked before
            any pointer is handed over).
    """
    flat, base = _native_inputs("view_linear", obs, base, weight)
    gate = _checked_gate(gate, obs, weight)
    return _ViewLinear.apply(flat, base, weight, gate).reshape(*obs.shape[:-1], weight.shape[0])


def _checked_gate(gate: Tensor | None, obs: Tensor, weight: Tensor) -> Tensor | None:
    """The gate [.., C] as the view kernels read it ([rows, C] contiguous), or ValueError."""
    if gate is None:
        return None
    lead, vocab, c = obs.shape[:-1], weight.shape[1], gate.shape[-1]
    if gate.dtype != torch.float32 or gate.device.type != "cpu" or gate.shape[:-1] != lead:
        raise ValueError(
            f"view_linear: a float32 CPU gate of shape {(*lead, 'C')}, got {gate.dtype} "
            f"{tuple(gate.shape)} on {gate.device}"
        )
    if c < 1 or vocab % c:
        raise ValueError(f"view_linear: {c} gate channels do not divide {vocab} features")
    return gate.reshape(-1, c).contiguous()


#: native.c's activations after a view's read (view_forward_act)
ACTIVATIONS = {"tanh": 1, "relu": 2}


class _ViewLinearAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, obs: Tensor, base: Tensor | None, weight: Tensor, gate, act):
        dim, vocab = weight.shape
        table = weight.detach().t().contiguous()
        args = _view_args(obs, base, gate, dim, vocab)
        code = native.library().view_forward_act(*args, table.data_ptr(), act, pre.data_ptr())
        _view_checked(code, "sizes", vocab)
        ctx.mark_dirty(pre)
        ctx.save_for_backward(obs, base, gate, table, pre)  # pre now holds the output
        ctx.act = act
        return pre

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        obs, base, gate, table, out = ctx.saved_tensors
        vocab, dim = table.shape
        grad_out = grad_out.contiguous()
        grad_pre = torch.empty_like(out)
        grad = grad_out.new_zeros(vocab, dim)
        grad_gate = None if gate is None else torch.empty_like(gate)
        args = _view_args(obs, base, gate, dim, vocab)
        code = native.library().view_backward_act(
            *args, table.data_ptr(), ctx.act, out.data_ptr(), grad_out.data_ptr(),
            grad_pre.data_ptr(), grad.data_ptr(),
            None if grad_gate is None else grad_gate.data_ptr(),
        )  # fmt: skip
        _view_checked(code, "sizes", vocab)
        return grad_pre, None, None, grad.t(), grad_gate, None


def view_linear_act(
    pre: Tensor,
    obs: Tensor,
    base: Tensor | None,
    weight: Tensor,
    gate: Tensor | None = None,
    act: str = "tanh",
) -> Tensor:
    """act(pre + ``view_linear(obs, base, weight, gate)``), act "tanh" or "relu", written over
    ``pre`` [rows, D] (float32, contiguous, on the CPU; obs [rows, ..]): a layer whose other
    inputs' share is in ``pre`` (the view-gate MLP heads' first layer, the encoder's), in one
    pass over each row; differentiable in ``pre``, ``weight`` and ``gate``. The tanh is
    native.c's (within ~1e-7 of torch's).

    Raises:
        ValueError: as ``view_linear``, an unknown act, or a ``pre`` it can't write.
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"view_linear_act: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    flat, base = _native_inputs("view_linear_act", obs, base, weight)
    dim = weight.shape[0]
    if (
        pre.dtype != torch.float32
        or pre.device.type != "cpu"
        or pre.shape != (flat.shape[0], dim)
        or not pre.is_contiguous()
    ):
        raise ValueError(
            f"view_linear_act: pre must be a contiguous float32 CPU tensor of shape "
            f"{(flat.shape[0], dim)}, got {pre.dtype} {tuple(pre.shape)} on {pre.device}"
        )
    gate = _checked_gate(gate, obs, weight)
    return _ViewLinearAct.apply(pre, flat, base, weight, gate, ACTIVATIONS[act])
