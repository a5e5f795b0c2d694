"""Pure gate math of the gate family (Gu et al., "Improving the Gating Mechanism of Recurrent
Neural Networks", ICML 2020; Shen et al., ON-LSTM, ICLR 2019; Tallec & Ollivier, ICLR 2018).

Every function reads like the equation it computes (given in its docstring); the
reference cells are built from them, and the fused backends are tested against those.
"""

from __future__ import annotations

import torch
from torch import Tensor


def refine_gate(f: Tensor, r: Tensor) -> Tensor:
    """Effective gate of the refine mechanism (docs/gates.md, the refine gate).

    g = r * (1 - (1 - f)^2) + (1 - r) * f^2, which lies between f^2 and 1 - (1 - f)^2;
    r = 1/2 gives g = f.

    Args:
        f: primary (forget/retention) gate in [0, 1], any shape.
        r: refine gate in [0, 1], same shape as ``f``.

    Returns:
        g, same shape as ``f``.
    """
    return r * (1.0 - (1.0 - f) ** 2) + (1.0 - r) * f**2


def cumax(z: Tensor, chunk_size: int = 1) -> Tensor:
    """Cumulative softmax along the last axis (ON-LSTM's master gate, docs/gates.md).

    With ``chunk_size`` c > 1 the last axis of ``z`` has n = H / c entries; the result is
    cumsum(softmax(z)) broadcast over each chunk to width H = n * c.

    Args:
        z: pre-activations, [..., n].
        chunk_size: width of each chunk in the output.

    Returns:
        [..., n * chunk_size], monotone non-decreasing along the last axis, in [0, 1].
    """
    y = torch.cumsum(torch.softmax(z, dim=-1), dim=-1)
    if chunk_size > 1:
        y = torch.repeat_interleave(y, chunk_size, dim=-1)
    return y


def uniform_gate_bias(hidden_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform gate initialisation (UGI, docs/gates.md): b_f = logit(u), u ~ U[1/d, 1 - 1/d].

    At initialisation (small weights) the gate sigma(b_f) = u is spread uniformly over
    (0, 1), so the timescales 1 / (1 - f) spread over [~1, d].

    Args:
        hidden_size: d, the number of units.
        generator: optional RNG.

    Returns:
        [d] biases.
    """
    d = hidden_size
    lo, hi = 1.0 / d, 1.0 - 1.0 / d
    if d <= 2:  # U[1/d, 1-1/d] degenerates: keep the gate at 1/2.
        lo = hi = 0.5
    u = lo + (hi - lo) * torch.rand(d, generator=generator, dtype=torch.float64)
    return -torch.log(1.0 / u - 1.0)


def chrono_forget_bias(
    hidden_size: int, t_max: float, generator: torch.Generator | None = None
) -> Tensor:
    """Chrono initialisation (docs/gates.md): b_f = log(U[1, T_max - 1]); the caller sets
    b_i = -b_f.

    Args:
        hidden_size: number of units.
        t_max: longest dependency expected, T_max > 2.
        generator: optional RNG.

    Returns:
        [hidden_size] forget biases in [0, log(T_max - 1)].
    """
    u = 1.0 + (t_max - 2.0) * torch.rand(hidden_size, generator=generator, dtype=torch.float64)
    return torch.log(u)


def timescale(g: Tensor, eps: float = 1e-6) -> Tensor:
    """Characteristic timescale 1 / (1 - g) of a retention gate g (docs/gates.md, Diagnostics)."""
    return 1.0 / (1.0 - g).clamp_min(eps)
