"""The GRU family: gru (torch.nn.GRU semantics) and ur-gru (docs/gates.md).

Pre-activations come from two affine maps, as in torch.nn.GRU, because the candidate's
recurrent term sits inside the reset gate: gx = W_ih x + b_ih, gh = W_hh h + b_hh, each split
into d-wide blocks [r, z, n] (+ [rho] for ur-gru). The retention gate is z:
h_t = g * h_{t-1} + (1 - g) * n, with g = z for the GRU and g = refine(z, rho) for the UR-GRU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlgate.cores import fused, fused_native, recurrence
from rlgate.cores.base import GRUState, RecurrentCore
from rlgate.cores.gates import refine_gate, uniform_gate_bias
from rlgate.cores.presets import Preset
from rlgate.cores.triton_modes import GRU, URGRU


class GRUCore(RecurrentCore):
    """A core of the GRU family.

    Args:
        preset: "gru" or "ur-gru" preset.
        input_size: I.
        hidden_size: H.
        backend: one of ``rlgate.cores.backends.BACKENDS`` (see ``resolve_backend``).
        forget_bias: constant bias of the retention gate z for standard init (default 0.0,
            as torch.nn.GRU's expectation).
        tie_refine_bias: initialise the refine bias to -b_z (True) or to 0.
    """

    State = GRUState

    @classmethod
    def from_torch(cls, gru: nn.GRU, backend: str = "auto") -> GRUCore:
        """The plain "gru" core holding a ``torch.nn.GRU``'s weights, on its device and dtype
        (haste's ``from_native_weights``): the same gate blocks (r, z, n) and both biases.
        Its outputs, states and gradients equal nn.GRU's (tests/test_cores.py)."""
        from rlgate.cores.lstm import _check_torch_rnn
        from rlgate.cores.presets import get_preset

        _check_torch_rnn(gru, nn.GRU)
        ref = gru.weight_ih_l0
        core = cls(get_preset("gru"), gru.input_size, gru.hidden_size, backend=backend)
        core = core.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(core, name).copy_(getattr(gru, f"{name}_l0"))
        return core

    def __init__(
        self,
        preset: Preset,
        input_size: int,
        hidden_size: int,
        backend: str = "auto",
        forget_bias: float = 0.0,
        tie_refine_bias: bool = True,
    ):
        super().__init__(preset, input_size, hidden_size, backend)
        self.forget_bias = float(forget_bias)
        self.tie_refine_bias = bool(tie_refine_bias)
        d = hidden_size
        names = ["r", "z", "n"] + (["rho"] if preset.refine else [])
        self.blocks: dict[str, slice] = {n: slice(k * d, (k + 1) * d) for k, n in enumerate(names)}
        g = len(names) * d
        self._create_weights(g)
        self.bias_ih = nn.Parameter(torch.empty(g))
        self.bias_hh = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Weights U(-1/sqrt(H), 1/sqrt(H)); z bias per the preset; refine bias -b_z; others 0."""
        self._reset_weights(generator)
        self.bias_ih.zero_()
        self.bias_hh.zero_()
        if self.preset.init == "uniform":
            b_z = uniform_gate_bias(self.hidden_size, generator)
        else:
            b_z = torch.full((self.hidden_size,), self.forget_bias, dtype=torch.float64)
        self.bias_ih[self.blocks["z"]] = b_z
        if self.preset.refine and self.tie_refine_bias:
            self.bias_ih[self.blocks["rho"]] = -b_z

    def _cell(self, x_t: Tensor, state: GRUState):
        """One step, written as docs/gates.md (UR-GRU) and torch.nn.GRU write it."""
        (h,) = state
        gx = F.linear(x_t, self.weight_ih, self.bias_ih)
        gh = F.linear(h, self.weight_hh, self.bias_hh)
        blk = self.blocks
        r = torch.sigmoid(gx[:, blk["r"]] + gh[:, blk["r"]])
        z = torch.sigmoid(gx[:, blk["z"]] + gh[:, blk["z"]])
        n = torch.tanh(gx[:, blk["n"]] + r * gh[:, blk["n"]])
        gates = {"f": z}
        g = z
        if self.preset.refine:
            rho = torch.sigmoid(gx[:, blk["rho"]] + gh[:, blk["rho"]])
            g = refine_gate(z, rho)
            gates["r"] = rho
        gates["g"] = g
        h_new = g * h + (1.0 - g) * n
        return GRUState(h_new), gates

    def triton_mode(self) -> int:
        return URGRU if self.preset.refine else GRU

    def _weights(self):
        return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _fused(self, x: Tensor, state: GRUState, is_first: Tensor, native: bool):
        if native:
            from rlgate.cores import native as lib

            kernel = fused_native.NativeGRUKernel(self.preset, self.hidden_size, lib.library())
        else:
            kernel = fused.GRUKernel(self.preset, self.hidden_size)
        return recurrence.run(
            kernel,
            x,
            is_first,
            self.weight_ih,
            self.weight_hh,
            self.bias_ih,
            self.bias_hh,
            tuple(state),
        )
