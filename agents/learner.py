"""What every learner shares: its model, optimizer and hyperparameters, and the gradient step."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlgate.agents.rollout import Rollout
from rlgate.agents.seen import seen_targets
from rlgate.distributed import World
from rlgate.optim import Adam


class Learner:
    """Base of the PPO and IMPALA learners.

    Args:
        model: the actor-critic.
        config: the algorithm's config section.
        gamma: discount; max_grad_norm: gradient clipping norm.
        optimizer: the optimizer of ``model``'s parameters.
        world: the data-parallel job this learner is part of (default: a single process);
            gradients are averaged over its ranks before clipping.
        reward_scale: rewards are multiplied by this before returns and advantages.
        seen_coef: weight of the seen-so-far auxiliary loss (``rlgate.agents.seen``; the model
            needs its seen head), 0 = none.
    """

    def __init__(
        self,
        model: nn.Module,
        config,
        gamma: float,
        max_grad_norm: float,
        optimizer: Adam,
        world: World | None = None,
        reward_scale: float = 1.0,
        seen_coef: float = 0.0,
    ):
        self.model, self.cfg = model, config
        self.gamma, self.max_grad_norm = gamma, max_grad_norm
        self.reward_scale = reward_scale
        self.seen_coef = seen_coef
        self.optimizer = optimizer
        self.world = world or World()
        self.params = [p for p in model.parameters() if p.requires_grad]

    def seen_targets(self, r: Rollout) -> tuple[Tensor, Tensor]:
        """The seen-so-far targets of the rollout's T steps: ([T, B, channels], valid [T, B])."""
        t_len = r.length
        obs = {k: v[:t_len] for k, v in r.obs.items()}
        return seen_targets(self.model.channels_in_view(obs), r.is_first[:t_len])

    def gradient_step(self, loss: Tensor) -> float:
        """Backpropagate ``loss``, average the gradients over ranks, clip the gradient norm, step;
        returns the norm before clipping.

        Raises:
            FloatingPointError: the loss is not finite on this or (data-parallel) any rank;
                nothing is updated.
        """
        finite = bool(torch.isfinite(loss))
        if not finite and not self.world.distributed:
            raise FloatingPointError(
                f"non-finite loss {loss.item()} in the {type(self).__name__} update"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            loss.backward()
        # one message carries the gradients and whether any rank's loss was not finite
        if self.world.all_reduce_grads(self.params, flag=not finite):
            raise FloatingPointError(
                f"non-finite loss in the {type(self).__name__} update "
                f"(on rank {self.world.rank}: {loss.item()})"
            )
        norm = nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        # a fused optimizer's in-place update leaves the version counters as they were; the
        # native kernels' cached transposed weights (rlgate.cores.native.transposed) trust them
        for p in self.params:  # one at a time: older torch releases take a single tensor
            torch.autograd.graph.increment_version(p)
        return float(norm)
