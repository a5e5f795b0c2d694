"""Return estimators: GAE (Schulman et al. 2016) and V-trace (Espeholt et al. 2018, IMPALA).

Time-major tensors: [T, B]. ``discounts[t]`` is gamma * (1 - done_t), where done_t means the
transition t -> t+1 ended the episode (the next observation starts a new one), so nothing is
bootstrapped across an episode boundary. Time-limit truncations are treated as terminations.
tests/test_returns.py checks both against loops written like the papers' formulas.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


@torch.no_grad()
def gae(
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    discounts: Tensor,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation.

    delta_t = r_t + discount_t * V(x_{t+1}) - V(x_t);  A_t = delta_t + discount_t * lam * A_{t+1}.

    Args:
        rewards: r_t, [T, B].
        values: V(x_t), [T, B].
        bootstrap_value: V(x_T), [B].
        discounts: gamma * (1 - done_t), [T, B].
        lam: the GAE lambda.

    Returns:
        (advantages [T, B], returns = advantages + values [T, B]).
    """
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)])
    deltas = rewards + discounts * next_values - values
    advantages = torch.empty_like(deltas)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(rewards.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * lam * acc
        advantages[t] = acc
    return advantages, advantages + values


class VTraceReturns(NamedTuple):
    """Result of ``vtrace``: targets vs [T, B] and policy-gradient advantages [T, B]."""

    vs: Tensor
    pg_advantages: Tensor


@torch.no_grad()
def vtrace(
    log_rhos: Tensor,
    discounts: Tensor,
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    clip_rho_threshold: float = 1.0,
    clip_pg_rho_threshold: float = 1.0,
    clip_c_threshold: float = 1.0,
) -> VTraceReturns:
    """V-trace targets (Espeholt et al. 2018, eq. 1) and advantages.

    rho_t = min(rho_bar, pi/mu), c_t = min(c_bar, pi/mu),
    delta_t = rho_t (r_t + discount_t V(x_{t+1}) - V(x_t)),
    v_s - V(x_s) = delta_s + discount_s c_s (v_{s+1} - V(x_{s+1})),
    pg advantage_s = min(rho_bar_pg, pi/mu) (r_s + discount_s v_{s+1} - V(x_s)).

    Args:
        log_rhos: log(pi(a_t|x_t) / mu(a_t|x_t)), target over behaviour policy, [T, B].
        discounts: gamma * (1 - done_t), [T, B].
        rewards: [T, B].  values: V(x_t), [T, B].  bootstrap_value: V(x_T), [B].
        clip_rho_threshold: rho_bar; clip_pg_rho_threshold: rho_bar of the advantages;
        clip_c_threshold: c_bar.
    """
    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos.clamp(max=clip_rho_threshold)
    cs = rhos.clamp(max=clip_c_threshold)
    next_values = torch.cat([values[1:], bootstrap_value.unsqueeze(0)])
    deltas = clipped_rhos * (rewards + discounts * next_values - values)
    vs_minus_v = torch.empty_like(deltas)
    acc = torch.zeros_like(bootstrap_value)
    for t in range(rewards.shape[0] - 1, -1, -1):
        acc = deltas[t] + discounts[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values
    next_vs = torch.cat([vs[1:], bootstrap_value.unsqueeze(0)])
    pg_rhos = rhos.clamp(max=clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + discounts * next_vs - values)
    return VTraceReturns(vs, pg_advantages)
