"""The LSTM family (docs/gates.md): lstm, c-lstm, om-lstm, u-, r-, ur-, o- and or-lstm.

Parameters are one affine map of (x_t, h_{t-1}) to the pre-activations z = W_ih x + W_hh h + b,
split into d-wide blocks:

- untied (lstm, c-lstm):     [i, f, u, o]                  (PyTorch's i, f, g, o packing)
- om-lstm:                   [i, f, u, o, f~, i~]           (f~, i~ are n = d / chunk wide)
- tied, no refine (u-, o-):  [f, u, o]
- tied with refine (r-, ur-, or-): [r, f, u, o]             (r takes i's block: same size as LSTM)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rlgate.cores import fused, fused_native, recurrence
from rlgate.cores.base import LSTMState, RecurrentCore
from rlgate.cores.gates import chrono_forget_bias, cumax, refine_gate, uniform_gate_bias
from rlgate.cores.presets import Preset
from rlgate.cores.triton_modes import LSTM, MASTER, REFINE, TIED


def _check_torch_rnn(rnn: nn.RNNBase, kind: type) -> None:
    """ValueError unless ``rnn`` is a one-layer, one-direction ``kind`` with biases (what a
    core holds)."""
    if type(rnn) is not kind:
        raise ValueError(f"expected a torch.nn.{kind.__name__}, got {type(rnn).__name__}")
    if rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias or getattr(rnn, "proj_size", 0):
        raise ValueError(
            f"a core holds one layer of one direction with biases and no projection; this "
            f"{kind.__name__} has num_layers={rnn.num_layers}, bidirectional={rnn.bidirectional}, "
            f"bias={rnn.bias}, proj_size={getattr(rnn, 'proj_size', 0)}"
        )


class LSTMCore(RecurrentCore):
    """A core of the LSTM family, configured by its preset (see ``rlgate.cores.CORES``).

    Args:
        preset: the preset.
        input_size: I.
        hidden_size: H (d in the paper).
        backend: one of ``rlgate.cores.backends.BACKENDS`` (see ``resolve_backend``).
        forget_bias: constant forget bias for standard init (default 1.0).
        chrono_t_max: T_max of chrono init (c-lstm); the longest dependency expected.
        chunk_size: ON-LSTM chunk size (om-lstm); must divide H.
        tie_refine_bias: initialise the refine bias to -b_f (True, docs/gates.md) or to 0.
    """

    State = LSTMState

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, backend: str = "auto") -> LSTMCore:
        """The plain "lstm" core holding a ``torch.nn.LSTM``'s weights, on its device and
        dtype (haste's ``from_native_weights``): the same gate blocks (i, f, u, o), and the
        two biases summed into the core's one. Time-major like nn.LSTM's default; its
        outputs, states and gradients equal nn.LSTM's (tests/test_cores.py)."""
        from rlgate.cores.presets import get_preset

        _check_torch_rnn(lstm, nn.LSTM)
        ref = lstm.weight_ih_l0
        core = cls(get_preset("lstm"), lstm.input_size, lstm.hidden_size, backend=backend)
        core = core.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            core.weight_ih.copy_(lstm.weight_ih_l0)
            core.weight_hh.copy_(lstm.weight_hh_l0)
            core.bias.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        return core

    def __init__(
        self,
        preset: Preset,
        input_size: int,
        hidden_size: int,
        backend: str = "auto",
        forget_bias: float = 1.0,
        chrono_t_max: float = 120.0,
        chunk_size: int = 1,
        tie_refine_bias: bool = True,
    ):
        super().__init__(preset, input_size, hidden_size, backend)
        if preset.refine and not preset.tied:
            raise ValueError("the refine gate is defined for the tied-input LSTM only")
        if preset.init == "chrono" and not chrono_t_max > 2:
            raise ValueError(f"chrono_t_max must be > 2, got {chrono_t_max}")
        if preset.master and (chunk_size < 1 or hidden_size % chunk_size):
            raise ValueError(f"chunk_size must divide hidden_size={hidden_size}, got {chunk_size}")
        self.forget_bias = float(forget_bias)
        self.chrono_t_max = float(chrono_t_max)
        self.chunk_size = int(chunk_size) if preset.master else 1
        self.tie_refine_bias = bool(tie_refine_bias)

        d = hidden_size
        if preset.master:
            names = ["i", "f", "u", "o", "mf", "mi"]
        elif not preset.tied:
            names = ["i", "f", "u", "o"]
        elif preset.refine:
            names = ["r", "f", "u", "o"]
        else:
            names = ["f", "u", "o"]
        widths = {n: (d // self.chunk_size if n in ("mf", "mi") else d) for n in names}
        self.blocks: dict[str, slice] = {}
        start = 0
        for n in names:
            self.blocks[n] = slice(start, start + widths[n])
            start += widths[n]
        g = start
        self._create_weights(g)
        self.bias = nn.Parameter(torch.empty(g))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Weights U(-1/sqrt(H), 1/sqrt(H)) as torch.nn.LSTM; biases per the preset's init."""
        self._reset_weights(generator)
        self.bias.zero_()
        b = self.bias
        p, d = self.preset, self.hidden_size
        if p.forget_act == "sigmoid":
            if p.init == "uniform":
                b_f = uniform_gate_bias(d, generator)
            elif p.init == "chrono":
                b_f = chrono_forget_bias(d, self.chrono_t_max, generator)
                b[self.blocks["i"]] = -b_f
            else:
                b_f = torch.full((d,), self.forget_bias, dtype=torch.float64)
            b[self.blocks["f"]] = b_f
        if p.refine and self.tie_refine_bias:
            b[self.blocks["r"]] = -b[self.blocks["f"]]

    # ----------------------------------------------------------------- reference math
    def _cell(self, x_t: Tensor, state: LSTMState):
        """One step, written as docs/gates.md writes it. Returns (new state, gates dict)."""
        h, c = state
        z = F.linear(x_t, self.weight_ih, self.bias) + F.linear(h, self.weight_hh)
        zb = {name: z[:, s] for name, s in self.blocks.items()}
        p = self.preset
        f = torch.sigmoid(zb["f"]) if p.forget_act == "sigmoid" else cumax(zb["f"])
        gates = {"f": f}
        u = torch.tanh(zb["u"])
        o = torch.sigmoid(zb["o"])
        if p.tied:
            g = f
            if p.refine:
                r = torch.sigmoid(zb["r"])
                g = refine_gate(f, r)
                gates["r"] = r
            c_new = g * c + (1.0 - g) * u
        elif p.master:
            i = torch.sigmoid(zb["i"])
            master_f = cumax(zb["mf"], self.chunk_size)
            master_i = 1.0 - cumax(zb["mi"], self.chunk_size)
            omega = master_f * master_i
            g = f * omega + (master_f - omega)
            i_hat = i * omega + (master_i - omega)
            c_new = g * c + i_hat * u
        else:
            i = torch.sigmoid(zb["i"])
            g = f
            c_new = f * c + i * u
        gates["g"] = g
        h_new = o * torch.tanh(c_new)
        return LSTMState(h_new, c_new), gates

    # ----------------------------------------------------------------- fast paths
    def triton_mode(self) -> int | None:
        p = self.preset
        if p.forget_act != "sigmoid" or p.master:
            return None
        return (REFINE if p.refine else TIED) if p.tied else LSTM

    def native_mode(self) -> int | None:
        p = self.preset
        if p.master and p.forget_act == "sigmoid":
            return MASTER
        return self.triton_mode()

    def _weights(self):
        return self.weight_ih, self.weight_hh, self.bias, None

    def _fused(self, x: Tensor, state: LSTMState, is_first: Tensor, native: bool):
        if native:
            from rlgate.cores import native as lib

            kernel = fused_native.NativeLSTMKernel(
                self.preset, self.blocks, self.native_mode(), self.chunk_size, lib.library()
            )
        else:
            kernel = fused.LSTMKernel(self.preset, self.blocks, self.chunk_size)
        return recurrence.run(
            kernel, x, is_first, self.weight_ih, self.weight_hh, self.bias, None, tuple(state)
        )
