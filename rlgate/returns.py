"""Return estimators: GAE (Schulman et al. 2016) and V-trace (Espeholt et al. 2018, IMPALA).

Time-major tensors: [T, B]. Step t is the transition x_t -> x_{t+1} with reward r_t. An
episode can end at step t in two ways (Pardo et al. 2018, "Time Limits in Reinforcement
Learning"):

- ``terminated[t]``: the task ended it; nothing follows, so nothing is bootstrapped;
- ``truncated[t]``: a time limit cut it; the task goes on from the final observation, so
  r_t is followed by gamma * V(final observation).

``next_values[t]`` is V of the observation after step t: V(x_{t+1}) inside an episode, the
value of the final observation where the episode was truncated (its entry where the
episode terminated is not read). ``next_state_values`` builds it from a rollout. Across the
end of an episode (either kind) no trace is carried. These are the conventions of TorchRL's
functional estimators (``done = terminated | truncated``); tests/test_returns.py checks both
against them and against loops written like the papers' formulas.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


def next_state_values(
    values: Tensor, bootstrap_value: Tensor, truncated: Tensor, final_values: Tensor
) -> Tensor:
    """V of the observation after each step, [T, B].

    Args:
        values: V(x_t), [T, B].  bootstrap_value: V(x_T), [B].
        truncated: [T, B] bool.  final_values: V(final observation) where truncated, [T, B].
    """
    shifted = torch.cat([values[1:], bootstrap_value.unsqueeze(0)])
    return torch.where(truncated, final_values, shifted)


@torch.no_grad()
def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation.

    delta_t = r_t + gamma (1 - terminated_t) next_values_t - V(x_t);
    A_t = delta_t + gamma lam (1 - done_t) A_{t+1},  done_t = terminated_t or truncated_t.

    Args:
        rewards: r_t, [T, B].  values: V(x_t), [T, B].
        next_values: V after step t, [T, B] (see the module docstring).
        terminated, truncated: [T, B] bool.
        gamma: discount.  lam: the GAE lambda.

    Returns:
        (advantages [T, B], returns = advantages + values [T, B]).
    """
    keep = gamma * (~terminated).to(values.dtype)
    trace = gamma * lam * (~(terminated | truncated)).to(values.dtype)
    deltas = rewards + keep * next_values - values
    advantages = torch.empty_like(deltas)
    acc = torch.zeros_like(deltas[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        acc = deltas[t] + trace[t] * acc
        advantages[t] = acc
    return advantages, advantages + values


class VTraceReturns(NamedTuple):
    """Result of ``vtrace``: targets vs [T, B] and policy-gradient advantages [T, B]."""

    vs: Tensor
    pg_advantages: Tensor


@torch.no_grad()
def vtrace(
    log_rhos: Tensor,
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    clip_rho_threshold: float = 1.0,
    clip_pg_rho_threshold: float = 1.0,
    clip_c_threshold: float = 1.0,
) -> VTraceReturns:
    """V-trace targets (Espeholt et al. 2018, eq. 1) and advantages.

    rho_t = min(rho_bar, pi/mu), c_t = min(c_bar, pi/mu),
    delta_t = rho_t (r_t + gamma (1 - terminated_t) next_values_t - V(x_t)),
    v_s - V(x_s) = delta_s + gamma (1 - done_s) c_s (v_{s+1} - V(x_{s+1})),
    pg advantage_s = min(rho_bar_pg, pi/mu) (r_s + gamma (1 - terminated_s) v'_{s+1} - V(x_s)),
    where v'_{s+1} is v_{s+1} inside an episode and next_values_s where it ended (or at T).

    Args:
        log_rhos: log(pi(a_t|x_t) / mu(a_t|x_t)), target over behaviour policy, [T, B].
        rewards: [T, B].  values: V(x_t), [T, B].  next_values: V after step t, [T, B].
        terminated, truncated: [T, B] bool.  gamma: discount.
        clip_rho_threshold: rho_bar; clip_pg_rho_threshold: rho_bar of the advantages;
        clip_c_threshold: c_bar.
    """
    done = terminated | truncated
    keep = gamma * (~terminated).to(values.dtype)
    trace = gamma * (~done).to(values.dtype)
    rhos = torch.exp(log_rhos)
    clipped_rhos = rhos.clamp(max=clip_rho_threshold)
    cs = rhos.clamp(max=clip_c_threshold)
    deltas = clipped_rhos * (rewards + keep * next_values - values)
    vs_minus_v = torch.empty_like(deltas)
    acc = torch.zeros_like(deltas[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        acc = deltas[t] + trace[t] * cs[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values
    next_vs = torch.cat([vs[1:], next_values[-1:]])
    next_vs = torch.where(done, next_values, next_vs)
    pg_rhos = rhos.clamp(max=clip_pg_rho_threshold)
    pg_advantages = pg_rhos * (rewards + keep * next_vs - values)
    return VTraceReturns(vs, pg_advantages)
