"""What every learner shares: its model, optimizer and hyperparameters, and the gradient step."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Learner:
    """Base of the PPO and IMPALA learners.

    Args:
        model: the actor-critic.
        config: the algorithm's config section.
        gamma: discount; max_grad_norm: gradient clipping norm.
        optimizer: the optimizer of ``model``'s parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        config,
        gamma: float,
        max_grad_norm: float,
        optimizer: torch.optim.Optimizer,
    ):
        self.model, self.cfg = model, config
        self.gamma, self.max_grad_norm = gamma, max_grad_norm
        self.optimizer = optimizer

    def gradient_step(self, loss: Tensor) -> float:
        """Backpropagate ``loss``, clip the gradient norm, step; returns the norm before clipping.

        Raises:
            FloatingPointError: the loss is not finite (nothing is updated).
        """
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} in the {type(self).__name__} update"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return float(norm)
