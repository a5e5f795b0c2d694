"""Process-level performance settings. Nothing here runs on import; entry points opt in.

On Linux, glibc returns freed large blocks to the OS and hands out fresh pages that fault on
first touch. A recurrent core's saved activations and workspaces are large and short-lived,
so on a CPU every training step would page-fault tens of megabytes again. Keeping freed memory
in the process (as jemalloc/tcmalloc setups recommended for PyTorch on CPU do) removes that
cost; it affects every torch op alike, so benchmark ratios stay fair.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Ask glibc malloc to keep freed memory for reuse. Returns True if it was applied."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    log.debug("tune_cpu_allocator applied=%s", ok)
    return ok


class StopSignals:
    """Turns SIGINT and SIGTERM into a request to stop at the next safe point.

    Inside ``with StopSignals() as stop:``, the first SIGINT or SIGTERM sets ``stop.signum``
    (the trainer then finishes its update, writes a checkpoint and leaves: a checkpoint always
    holds a state between two updates, so that a resume is the same run); a second one raises
    KeyboardInterrupt at once. Handlers are only installed from the main thread (Python's rule);
    elsewhere the context does nothing. The previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce=None):
        self.signum: int | None = None
        self._announce = announce
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self._announce is not None:
            self._announce(signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
