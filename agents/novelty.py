"""An episodic novelty bonus: pay for reaching an observation not seen before in the episode.

Tasks whose reward needs the agent to look somewhere first (Active Match: the cue sits at a
random wall cell, out of view) give no reward for looking until a memory of what was seen pays
off, and no memory forms while few episodes see anything worth keeping. A bonus for each
observation new to the episode (count-based exploration with the episode as the count's
window, as in episodic-curiosity agents) pays for sweeping the room instead of walking in
circles, whatever the core. Exact repeats only: with continuous observations every step is
new and the bonus is a constant, which changes no policy gradient but shifts the values.

``EpisodicNovelty`` keeps, per copy, the hashes of the episode's distinct observations (a ring
of ``capacity``: beyond it the oldest are forgotten) on the env's device; one call a step, no
loop over copies and no host sync.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: distinct observations remembered per episode (Active Match's episodes have at most 45 steps)
CAPACITY = 256


def observation_hash(obs: dict[str, Tensor], coeffs: dict[str, Tensor]) -> Tensor:
    """obs: dict of [N, ...] (any dtype), coeffs: dict of [D_k] int64 (D_k the per-copy
    element count of obs[k]) -> [N] int64: a random linear hash of each copy's exact values
    (floats by their bit patterns), wrapping modulo 2**64. Equal observations hash equally;
    two different ones collide with probability about 2**-62 for random odd coefficients."""
    out = None
    for key in sorted(obs):
        x = obs[key]
        flat = x.reshape(x.shape[0], -1)
        if flat.dtype.is_floating_point:
            flat = flat.to(torch.float32).view(torch.int32)
        h = (flat.to(torch.int64) * coeffs[key]).sum(-1)
        out = h if out is None else out * 1_000_003 + h
    return out


class EpisodicNovelty:
    """Which copies' observations are new within their episode.

    Args:
        example: one observation of the N copies (dict of [N, ...]), for the shapes and device.
        capacity: distinct observations kept per episode (a ring: the oldest go first).
        seed: seed of the hash's coefficients.
    """

    def __init__(self, example: dict[str, Tensor], capacity: int = CAPACITY, seed: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        first = next(iter(example.values()))
        n, device = first.shape[0], first.device
        gen = torch.Generator().manual_seed(seed)
        self.coeffs = {
            k: (torch.randint(0, 2**62, (v[0].numel(),), generator=gen) * 2 + 1).to(device)
            for k, v in example.items()
        }
        self.seen = torch.zeros(n, capacity, dtype=torch.int64, device=device)
        self.stored = torch.zeros(n, dtype=torch.int64, device=device)  # distinct ones so far
        self.slots = torch.arange(capacity, device=device)
        self.rows = torch.arange(n, device=device)

    def observe(self, obs: dict[str, Tensor], is_first: Tensor) -> Tensor:
        """Record this step's observations (dict of [N, ...]); is_first [N] bool starts a new
        episode in those copies before recording. -> [N] bool: the observation was not among
        its episode's remembered ones (the first of an episode is always new)."""
        h = observation_hash(obs, self.coeffs)
        stored = torch.where(is_first, 0, self.stored)
        valid = self.slots < stored[:, None]
        new = ~((self.seen == h[:, None]) & valid).any(1)
        slot = stored % self.seen.shape[1]
        self.seen[self.rows, slot] = torch.where(new, h, self.seen[self.rows, slot])
        self.stored = stored + new
        return new

    def state_dict(self) -> dict[str, Tensor]:
        return {"seen": self.seen.cpu().clone(), "stored": self.stored.cpu().clone()}

    def load_state_dict(self, data: dict[str, Tensor]) -> None:
        if data["seen"].shape != self.seen.shape:
            raise ValueError("the saved novelty memory does not fit these envs")
        self.seen = data["seen"].to(self.seen.device)
        self.stored = data["stored"].to(self.stored.device)
