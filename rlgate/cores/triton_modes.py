"""Modes of the Triton kernels (which gate blocks W holds) and whether Triton interprets; no
triton import here, so the cores can ask without loading it."""

import os

#: untied LSTM [i, f, u, o] (lstm, c-lstm); tied [f, u, o] (u-lstm); tied with refine
#: [r, f, u, o] (r-, ur-lstm); GRU [r, z, n] (gru); UR-GRU [r, z, n, rho] (ur-gru)
LSTM, TIED, REFINE, GRU, URGRU = range(5)
#: ON-LSTM [i, f, u, o, f~, i~] (om-lstm): the native CPU kernels only (rlgate/cores/native.c)
MASTER = 5


def interpreted() -> bool:
    """Whether Triton runs its interpreter (kernels on CPU tensors): TRITON_INTERPRET=1."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
