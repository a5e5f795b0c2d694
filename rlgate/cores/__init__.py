"""Gated recurrent cores: the gate family of Gu et al. (ICML 2020) behind one interface.

>>> from rlgate.cores import CORES, make_core
>>> core = make_core("ur-lstm", input_size=8, hidden_size=16)
>>> state = core.initial_state(batch_size=4)

Every core is a ``RecurrentCore``: ``initial_state``, ``forward(x [T,B,I], state, is_first
[T,B])``, ``step`` and ``gates``. The equations are in the docstrings of ``presets``, ``gates``,
``lstm`` and ``gru``.
"""

from __future__ import annotations

from rlgate.cores.base import BACKENDS, GRUState, LSTMState, RecurrentCore
from rlgate.cores.feedforward import FeedForwardCore, FFState
from rlgate.cores.gru import GRUCore
from rlgate.cores.lstm import LSTMCore
from rlgate.cores.presets import CORES, RECURRENT, Preset, get_preset

__all__ = [
    "BACKENDS",
    "CORES",
    "RECURRENT",
    "FFState",
    "FeedForwardCore",
    "GRUCore",
    "GRUState",
    "LSTMCore",
    "LSTMState",
    "Preset",
    "RecurrentCore",
    "get_preset",
    "make_core",
]


def make_core(name: str, input_size: int, hidden_size: int, **options) -> RecurrentCore:
    """Build the core named ``name`` (a key of ``CORES``).

    Args:
        name: preset or alias, e.g. "ur-lstm", "lstm", "chrono".
        input_size: I.
        hidden_size: H.
        **options: preset-specific options (``Preset.options``): ``backend`` (one of
            ``rlgate.cores.base.BACKENDS``), ``forget_bias``, ``chrono_t_max``, ``chunk_size``,
            ``tie_refine_bias``.

    Raises:
        ValueError: unknown name or option, naming the valid ones; invalid option values.
    """
    preset = get_preset(name)
    unknown = sorted(set(options) - set(preset.options))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for core {preset.name!r}; "
            f"valid options: {', '.join(preset.options)}"
        )
    cls = {"lstm": LSTMCore, "gru": GRUCore, "ff": FeedForwardCore}[preset.family]
    return cls(preset, input_size, hidden_size, **options)
