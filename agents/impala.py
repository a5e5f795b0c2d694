"""IMPALA's learner (Espeholt et al. 2018): actor-critic corrected with V-trace.

Unrolls come from actors acting with a possibly lagged copy of the parameters (their behaviour
log-probabilities are stored in the unroll); the learner recomputes logits and values with the
current parameters over T + 1 steps from the unroll's start state and corrects with V-trace.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlgate.agents.learner import Learner
from rlgate.agents.rollout import Rollout
from rlgate.config import IMPALAConfig
from rlgate.returns import vtrace


def impala_loss(
    logits: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    actions: Tensor,
    behaviour_logp: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    cfg: IMPALAConfig,
) -> dict[str, Tensor]:
    """Policy-gradient, baseline and entropy terms with V-trace targets.

    Args:
        logits: [T, B, A]; values: [T, B]; bootstrap_value: [B] (all from the learner's
            parameters); actions, behaviour_logp, rewards, discounts: [T, B].
    """
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    log_rhos = logp.detach() - behaviour_logp
    vt = vtrace(
        log_rhos,
        discounts,
        rewards,
        values.detach(),
        bootstrap_value.detach(),
        cfg.clip_rho,
        cfg.clip_pg_rho,
        cfg.clip_c,
    )
    policy = -(vt.pg_advantages * logp).mean()
    baseline = 0.5 * (vt.vs - values).pow(2).mean()
    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
    return {
        "policy": policy,
        "value": baseline,
        "entropy": entropy,
        "mean_rho": log_rhos.exp().mean(),
    }


class IMPALA(Learner):
    """The V-trace learner: one gradient step per unroll (constructor: see ``Learner``)."""

    def update(self, r: Rollout, generator: torch.Generator | None = None) -> dict[str, float]:
        logits, values, _ = self.model(
            r.obs, r.prev_action, r.prev_reward, r.is_first, r.states[0]
        )  # T + 1 steps
        discounts = self.gamma * (~r.dones).float()
        out = impala_loss(
            logits[:-1],
            values[:-1],
            values[-1],
            r.actions,
            r.logp,
            r.rewards * self.reward_scale,
            discounts,
            self.cfg,
        )
        loss = (
            out["policy"]
            + self.cfg.baseline_coef * out["value"]
            - self.cfg.ent_coef * out["entropy"]
        )
        grad_norm = self.gradient_step(loss)
        metrics = {k: float(v.detach()) for k, v in out.items()}
        metrics.update(loss=float(loss.detach()), grad_norm=float(grad_norm))
        return metrics
