"""IMPALA's learner (Espeholt et al. 2018): actor-critic corrected with V-trace.

Unrolls come from actors acting with a possibly lagged copy of the parameters (their behaviour
log-probabilities are stored in the unroll); the learner recomputes logits and values with the
current parameters over T + 1 steps from the unroll's start state and corrects with V-trace.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Distribution

from rlgate.agents.learner import Learner
from rlgate.agents.rollout import Rollout
from rlgate.agents.seen import seen_loss
from rlgate.config import IMPALAConfig
from rlgate.returns import vtrace


def impala_loss(
    dist: Distribution,
    values: Tensor,
    next_values: Tensor,
    actions: Tensor,
    behaviour_logp: Tensor,
    rewards: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    cfg: IMPALAConfig,
) -> dict[str, Tensor]:
    """Policy-gradient, baseline and entropy terms with V-trace targets.

    Args:
        dist: the learner's action distribution at every step; values: [T, B]; next_values:
            V after each step, [T, B] (``rlgate.returns``); actions: [T, B, *action shape];
            behaviour_logp, rewards, terminated, truncated: [T, B].
    """
    logp = dist.log_prob(actions)
    log_rhos = logp.detach() - behaviour_logp
    vt = vtrace(
        log_rhos,
        rewards,
        values.detach(),
        next_values.detach(),
        terminated,
        truncated,
        gamma,
        cfg.clip_rho,
        cfg.clip_pg_rho,
        cfg.clip_c,
    )
    policy = -(vt.pg_advantages * logp).mean()
    baseline = 0.5 * (vt.vs - values).pow(2).mean()
    entropy = dist.entropy().mean()
    return {
        "policy": policy,
        "value": baseline,
        "entropy": entropy,
        "mean_rho": log_rhos.exp().mean(),
    }


class IMPALA(Learner):
    """The V-trace learner: one gradient step per unroll (constructor: see ``Learner``)."""

    def update(self, r: Rollout, generator: torch.Generator | None = None) -> dict[str, float]:
        inputs = (r.obs, r.prev_action, r.prev_reward, r.is_first, r.states[0])  # T + 1 steps
        if self.seen_coef:
            params, values, _, seen_logits = self.model.forward_seen(*inputs)
        else:
            params, values, _ = self.model(*inputs)
        # truncated episodes bootstrap from the acting parameters' value of their final
        # observation (the learner has no core state there to recompute it from)
        out = impala_loss(
            self.model.action_dist.dist(params[:-1]),
            values[:-1],
            r.next_values(values[:-1], values[-1]),
            r.actions,
            r.logp,
            r.rewards * self.reward_scale,
            r.terminated,
            r.truncated,
            self.gamma,
            self.cfg,
        )
        loss = (
            out["policy"]
            + self.cfg.baseline_coef * out["value"]
            - self.cfg.ent_coef * out["entropy"]
        )
        if self.seen_coef:
            out["seen"] = seen_loss(seen_logits[:-1], *self.seen_targets(r))
            loss = loss + self.seen_coef * out["seen"]
        grad_norm = self.gradient_step(loss)
        metrics = {k: float(v.detach()) for k, v in out.items()}
        metrics.update(loss=float(loss.detach()), grad_norm=float(grad_norm))
        return metrics
