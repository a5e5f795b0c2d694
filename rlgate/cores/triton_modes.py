"""Modes of the Triton kernels: which gate blocks W holds (no triton import here)."""

#: untied LSTM [i, f, u, o] (lstm, c-lstm); tied [f, u, o] (u-lstm); tied with refine
#: [r, f, u, o] (r-, ur-lstm); GRU [r, z, n] (gru); UR-GRU [r, z, n, rho] (ur-gru)
LSTM, TIED, REFINE, GRU, URGRU = range(5)
