"""The presets: which cell, primary gate, initialisation and auxiliary gates (docs/gates.md
has their equations).

A preset is a frozen description; ``rlgate.cores.make_core`` turns it into a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal


@dataclass(frozen=True)
class Preset:
    """What a ``--core`` name means.

    Attributes:
        name: canonical name (aliases map to the same preset).
        family: "lstm", "gru" or "ff" (the memoryless control).
        tied: tied-input LSTM, c_t = g * c_{t-1} + (1 - g) * u (docs/gates.md).
        forget_act: "sigmoid" or "cumax" for the primary gate f (letter O, docs/gates.md).
        init: forget-bias initialisation: "standard" (constant), "uniform" (UGI, letter U)
            or "chrono" (letter C).
        refine: has a refine gate r (letter R, docs/gates.md).
        master: ON-LSTM master gates (the om-lstm, docs/gates.md).
        description: one line for ``--help``.
    """

    name: str
    family: Literal["lstm", "gru", "ff"]
    tied: bool = False
    forget_act: Literal["sigmoid", "cumax"] = "sigmoid"
    init: Literal["standard", "uniform", "chrono"] = "standard"
    refine: bool = False
    master: bool = False
    description: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the keyword options that ``make_core`` accepts for this preset."""
        opts = ["backend"]
        if self.family == "ff":
            return tuple(opts)
        if self.init == "standard" and self.forget_act == "sigmoid":
            opts.append("forget_bias")
        if self.init == "chrono":
            opts.append("chrono_t_max")
        if self.master:
            opts.append("chunk_size")
        if self.refine:
            opts.append("tie_refine_bias")
        return tuple(opts)


_PRESETS = (
    Preset("lstm", "lstm", description="standard LSTM, forget bias 1.0 (matches nn.LSTM)"),
    Preset("c-lstm", "lstm", init="chrono", description="standard LSTM, chrono init"),
    Preset("om-lstm", "lstm", master=True, description="ON-LSTM: cumax master gates"),
    Preset("u-lstm", "lstm", tied=True, init="uniform", description="tied-input LSTM, UGI"),
    Preset("r-lstm", "lstm", tied=True, refine=True, description="tied-input LSTM, refine gate"),
    Preset(
        "ur-lstm",
        "lstm",
        tied=True,
        init="uniform",
        refine=True,
        description="tied-input LSTM, UGI + refine gate (the paper's UR-LSTM)",
    ),
    Preset("o-lstm", "lstm", tied=True, forget_act="cumax", description="tied, cumax forget"),
    Preset(
        "or-lstm",
        "lstm",
        tied=True,
        forget_act="cumax",
        refine=True,
        description="tied-input LSTM, cumax forget gate + refine gate",
    ),
    Preset("gru", "gru", description="standard GRU (matches nn.GRU)"),
    Preset("ur-gru", "gru", init="uniform", refine=True, description="GRU, UGI + refine gate"),
    Preset(
        "mlp", "ff", description="no memory: one tanh layer (the control of a memory comparison)"
    ),
)

#: the presets with a recurrent state (every one but the memoryless control)
RECURRENT = tuple(p.name for p in _PRESETS if p.family != "ff")

_ALIASES = {"chrono": "c-lstm", "chrono-lstm": "c-lstm", "on-lstm": "om-lstm", "ff": "mlp"}

_by_name = {p.name: p for p in _PRESETS}

#: Every core name accepted by ``make_core`` and ``--core`` (presets and aliases), read-only.
CORES: MappingProxyType[str, Preset] = MappingProxyType(
    {**_by_name, **{alias: _by_name[target] for alias, target in _ALIASES.items()}}
)


def get_preset(name: str) -> Preset:
    """Look up a core name; raise ValueError naming the valid ones."""
    try:
        return CORES[name]
    except KeyError:
        raise ValueError(f"unknown core {name!r}; valid cores: {', '.join(CORES)}") from None
