"""The seen-so-far auxiliary loss: from the core output, predict which kinds of cell have
been in view at any step of the episode so far.

A memory task such as Active Match pays for a memory only through a later choice: until the
choice is learned the core gets no gradient for keeping what it saw, and until the core keeps
it the choice cannot be learned. This loss is a signal for the memory that does not go through
the choice. Its targets come from the agent's own observations (no task knowledge): for every
channel of the grid view (floor, wall, apple, each colour, ...), whether some cell of some view
since the episode's first step showed it. Channels seen once and then out of view (a cue's
colour, behind the agent or rooms ago) can only be predicted from memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def channels_in_view(view: Tensor) -> Tensor:
    """[T, B, cells, channels] per-cell channels -> [T, B, channels] bool: the channel is
    non-zero in some cell of the view."""
    return (view != 0).any(dim=-2)


def seen_targets(present: Tensor, is_first: Tensor) -> tuple[Tensor, Tensor]:
    """What has been in view so far in each step's episode.

    Args:
        present: [T, B, C] bool, channel c in view at step t (``channels_in_view``).
        is_first: [T, B] bool, step t is its episode's first.

    Returns:
        (targets [T, B, C] float: 1 where channel c was in view at some step s <= t of step
        t's episode; valid [T, B] bool: step t's episode starts within the window, so the
        targets are known (an episode under way at step 0 began before the window).
    """
    seen = torch.zeros_like(present[0])
    started = torch.zeros_like(is_first[0])
    targets, valid = [], []
    for t in range(present.shape[0]):
        first = is_first[t]
        seen = torch.where(first.unsqueeze(-1), present[t], seen | present[t])
        started = started | first
        targets.append(seen)
        valid.append(started)
    return torch.stack(targets).float(), torch.stack(valid)


def seen_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """Binary cross-entropy of ``logits`` [T, B, C] against ``targets`` [T, B, C], averaged
    over the channels and the ``valid`` [T, B] steps (0 where none is valid)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(-1)
    weight = valid.to(bce.dtype)
    return (bce * weight).sum() / weight.sum().clamp(min=1.0)
