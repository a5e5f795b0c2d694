"""The memoryless control: a feed-forward layer behind the core contract.

``--core mlp`` runs the same agent with no memory: y_t = tanh(W x_t + b), with an empty
state, so that ``is_first`` has nothing to reset. What a recurrent core gains over it on a
task is what its memory is worth there (POPGym's MLP baseline plays the same role).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlgate.cores.backends import BACKENDS, BackendUnavailable
from rlgate.cores.presets import Preset


class FFState(NamedTuple):
    """The state of the memoryless core: nothing."""


class FeedForwardCore(nn.Module):
    """The core contract without memory: ``forward(x [T, B, I], state, is_first) -> (y [T, B,
    H], state)`` with y_t = tanh(W x_t + b) (nn.Linear's init), for every t alone.

    Args:
        preset: the "mlp" preset.
        input_size: I.  hidden_size: H.
        backend: "auto", "reference", "fused" or "pytorch" all run the one layer (there is no
            recurrence to fuse); "native" and "triton", which name kernels, are refused.
    """

    State = FFState

    def __init__(self, preset: Preset, input_size: int, hidden_size: int, backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        if backend in ("native", "triton"):
            raise BackendUnavailable(
                f"backend={backend!r} is unavailable for {preset.name}: it has no recurrence to "
                "run in a kernel (use backend auto)"
            )
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}"
            )
        self.preset, self.backend = preset, backend
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size, hidden_size)

    def initial_state(self, batch_size: int, device=None) -> FFState:
        return FFState()

    def forward(self, x: Tensor, state=(), is_first: Tensor | None = None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be [T, B, {self.input_size}], got {tuple(x.shape)}")
        if is_first is not None and is_first.shape != x.shape[:2]:
            raise ValueError(f"is_first must be [T, B] = {tuple(x.shape[:2])}")
        return torch.tanh(F.linear(x, self.linear.weight, self.linear.bias)), FFState()

    def step(self, x_t: Tensor, state=()):
        return torch.tanh(self.linear(x_t)), FFState()

    def gates(self, x_t: Tensor, state=()) -> dict[str, Tensor]:
        """No gates: {}."""
        return {}

    def resolve_backend(self, x: Tensor) -> str:
        return "reference"

    def extra_repr(self) -> str:
        return (
            f"core={self.preset.name}, input_size={self.input_size}, hidden_size={self.hidden_size}"
        )
