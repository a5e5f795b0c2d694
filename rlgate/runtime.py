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
import sys

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
