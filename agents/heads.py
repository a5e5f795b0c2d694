"""The actor-critic's two MLP heads over one input, their gradient written out.

With ``--head-size N`` the policy and value heads are each Linear(K -> N) -> tanh -> Linear
over the same input y [M, K] (``rlgate.agents.actor_critic``). Through autograd that is some
25 ops forward and backward per minibatch; ``two_tanh_heads`` runs both first layers as one
matmul (the two weights stacked: the same sums as two matmuls) and one tanh, and its backward
in a dozen ops, one matmul giving dL/dy for both heads. The parameters stay the modules' own,
so checkpoints and initialisation do not change. ``two_tanh_heads_reference`` is the plain
module calls, the reference the tests hold it to.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def two_tanh_heads_reference(y: Tensor, policy: nn.Sequential, value: nn.Sequential):
    """(policy(y) [M, P], value(y) [M, 1]) through the modules."""
    return policy(y), value(y)


def _forward(y, w0p, b0p, w2p, b2p, w0v, b0v, w2v, b2v):
    """(policy outputs, values, and what the backward needs: the stacked first weight, h)."""
    n = w0p.shape[0]
    w0 = torch.cat([w0p, w0v])  # [2 N, K]
    h = torch.tanh(torch.addmm(torch.cat([b0p, b0v]), y, w0.t()))  # [M, 2 N]
    params = torch.addmm(b2p, h[:, :n], w2p.t())
    value = torch.addmm(b2v, h[:, n:], w2v.t())
    return params, value, w0, h


class _TwoTanhHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, w0p, b0p, w2p, b2p, w0v, b0v, w2v, b2v):
        params, value, w0, h = _forward(y, w0p, b0p, w2p, b2p, w0v, b0v, w2v, b2v)
        ctx.save_for_backward(y, w0, h, w2p, w2v)
        return params, value

    @staticmethod
    @once_differentiable
    def backward(ctx, d_params, d_value):
        y, w0, h, w2p, w2v = ctx.saved_tensors
        n = w2p.shape[1]
        hp, hv = h[:, :n], h[:, n:]
        # through the output layers: dL/dh of both heads side by side, [M, 2 N]
        dh = torch.cat([d_params.mm(w2p), d_value.mm(w2v)], dim=1)
        d_pre = torch.ops.aten.tanh_backward(dh, h)  # dh (1 - h^2)
        dw0 = torch.mm(y.t(), d_pre).t()  # [2 N, K]
        db0 = d_pre.sum(0)
        dy = d_pre.mm(w0) if ctx.needs_input_grad[0] else None
        return (
            dy,
            dw0[:n], db0[:n], d_params.t().mm(hp), d_params.sum(0),
            dw0[n:], db0[n:], d_value.t().mm(hv), d_value.sum(0),
        )  # fmt: skip


def two_tanh_heads(y: Tensor, policy: nn.Sequential, value: nn.Sequential):
    """``two_tanh_heads_reference``, fused: y [M, K] and two (Linear, Tanh, Linear) heads with
    first layers of the same width -> (policy outputs [M, P], values [M, 1]). Equal to the
    reference up to the order of float sums (the forward: to the bit on the sizes tested)."""
    p0, _, p2 = policy
    v0, _, v2 = value
    args = (y, p0.weight, p0.bias, p2.weight, p2.bias, v0.weight, v0.bias, v2.weight, v2.bias)
    if not torch.is_grad_enabled():  # acting: the forward alone, without the Function's cost
        return _forward(*args)[:2]
    return _TwoTanhHeads.apply(*args)
