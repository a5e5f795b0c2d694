"""The one interface every recurrent core implements (backend selection: ``backends``).

Time-major everywhere: x is [T, B, I]; ``is_first[t, b]`` is True where x[t, b] begins an
episode, so the state of column b is reset to the initial state before step t.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rlgate.cores import backends
from rlgate.cores.backends import BACKENDS, BackendUnavailable
from rlgate.cores.presets import Preset

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "GRUState",
    "LSTMState",
    "RecurrentCore",
    "reset_where",
]


def reset_where(is_first: Tensor, fresh, x: Tensor) -> Tensor:
    """x [N, ...] with the rows where ``is_first`` [N] is True replaced by ``fresh`` (a value,
    or a tensor like x): what a new episode starts from."""
    return torch.where(is_first.view(-1, *([1] * (x.dim() - 1))), fresh, x)


class LSTMState(NamedTuple):
    """State of the LSTM family: hidden h and cell c, [B, H] each."""

    h: Tensor
    c: Tensor


class GRUState(NamedTuple):
    """State of the GRU family: hidden h, [B, H]."""

    h: Tensor


class RecurrentCore(nn.Module):
    """Base class of every core: owns its initial state and its episode resets.

    Subclasses provide ``_cell`` (the readable one-step math, used by ``step``, ``gates`` and
    the reference backend) and ``_fused`` (the fast sequence path).
    """

    State: type = LSTMState

    def __init__(self, preset: Preset, input_size: int, hidden_size: int, backend: str):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
        if input_size < 1 or hidden_size < 1:
            raise ValueError(
                f"input_size and hidden_size must be >= 1, got {input_size} and {hidden_size}"
            )
        self.preset = preset
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.backend = backend
        self._announced: set[tuple[str, str]] = set()

    # ----------------------------------------------------------------- the contract
    def initial_state(self, batch_size: int, device: torch.device | str | None = None):
        """Zero state for ``batch_size`` columns: a NamedTuple of [B, H] tensors."""
        w = self.weight_hh
        device = w.device if device is None else device
        zeros = [
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=w.dtype)
            for _ in self.State._fields
        ]
        return self.State(*zeros)

    def forward(self, x: Tensor, state, is_first: Tensor | None = None):
        """Run the core over a sequence.

        Args:
            x: inputs, [T, B, I].
            state: the state before x[0] (NamedTuple of [B, H]).
            is_first: [T, B] bool; where True the state is reset before that step.
                None means no resets.

        Returns:
            (y, final_state): y is [T, B, H], final_state the state after x[T-1].
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"x must be [T, B, {self.input_size}], got {tuple(x.shape)}")
        if is_first is None:
            is_first = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        if is_first.shape != x.shape[:2]:
            raise ValueError(f"is_first must be [T, B] = {tuple(x.shape[:2])}")
        state = self.State(*state)
        path = self.resolve_backend(x)
        if path in ("native", "triton"):
            y, final = backends.kernel_forward(self, path, x, state, is_first.to(torch.bool))
            return y, self.State(*final)
        if path == "pytorch":
            y, final = self._fused(x, state, is_first.to(torch.bool), native=False)
            return y, self.State(*final)
        return self._reference(x, state, is_first)

    def step(self, x_t: Tensor, state):
        """One step for acting: x_t [B, I] -> (y_t [B, H], new state). No resets here."""
        new_state, _ = self._cell(x_t, self.State(*state))
        return new_state.h, new_state

    @torch.no_grad()
    def gates(self, x_t: Tensor, state) -> dict[str, Tensor]:
        """Gate activations of one step, [B, H] each.

        Keys: "f" (primary forget/retention gate), "r" (refine gate, where the core has
        one) and "g" (the effective gate that multiplies the previous state). Computed only
        when called; forward never pays for it.
        """
        _, gates = self._cell(x_t, self.State(*state))
        return gates

    # ----------------------------------------------------------------- backends
    def resolve_backend(self, x: Tensor) -> str:
        """Which path runs for input x: "reference", "native", "triton" or "pytorch"
        (``rlgate.cores.backends.resolve`` has the rules)."""
        return backends.resolve(self, x)

    def triton_mode(self) -> int | None:
        """The Triton kernels' mode for this core, or None where they don't cover it."""
        return None

    def native_mode(self) -> int | None:
        """The native CPU kernels' mode (numbered as triton_modes), or None where they don't
        cover this core."""
        return self.triton_mode()

    def _reference(self, x: Tensor, state, is_first: Tensor):
        """The specification: a plain loop of ``_cell`` with resets to the initial state."""
        init = self.initial_state(x.shape[1], device=x.device)
        ys = []
        for x_t, first_t in zip(x.unbind(0), is_first.unbind(0)):
            state = self.State(*(reset_where(first_t, s0, s) for s0, s in zip(init, state)))
            state, _ = self._cell(x_t, state)
            ys.append(state.h)
        return torch.stack(ys), state

    def extra_repr(self) -> str:
        return (
            f"core={self.preset.name}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, backend={self.backend}"
        )

    # ----------------------------------------------------------------- for subclasses
    def _create_weights(self, gate_width: int) -> None:
        """W_ih [G, I] and W_hh [G, H], G = gate_width, uninitialised."""
        self.weight_ih = nn.Parameter(torch.empty(gate_width, self.input_size))
        self.weight_hh = nn.Parameter(torch.empty(gate_width, self.hidden_size))

    def _reset_weights(self, generator: torch.Generator | None) -> None:
        """W_ih, W_hh ~ U(-1/sqrt(H), 1/sqrt(H)), as torch.nn.LSTM and torch.nn.GRU."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in (self.weight_ih, self.weight_hh):
            w.uniform_(-bound, bound, generator=generator)

    def _cell(self, x_t: Tensor, state):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fused(self, x: Tensor, state, is_first: Tensor, native: bool):  # pragma: no cover
        raise NotImplementedError

    def _weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:  # pragma: no cover
        """(W_ih, W_hh, b_ih, b_hh or None) for the Triton kernels."""
        raise NotImplementedError
