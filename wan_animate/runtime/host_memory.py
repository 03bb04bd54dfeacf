"""Host (CPU) memory the process can still use, read without psutil when it is absent, and a warning when a job's
frames will not fit in it."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
MEMINFO = "/proc/meminfo"
GIB = 1024 ** 3


def available_host_bytes() -> int | None:
    """Memory the system can give without swapping: psutil's `available` when installed, else MemAvailable of
    /proc/meminfo (Linux), else the free pages of os.sysconf; None when none of them answers (Windows without
    psutil)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open(MEMINFO) as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def warn_if_host_memory_short(required_bytes: int, job: str) -> bool:
    """Log a warning when `job` needs more host memory than is available; returns whether it did."""
    available = available_host_bytes()
    if available is None or required_bytes <= available:
        return False
    log.warning("%s needs about %.1f GiB of host memory for its frames, but only %.1f GiB is available: expect "
                "swapping or the process to be killed; use fewer frames (a shorter driving video) or a smaller size, "
                "or close other programs", job, required_bytes / GIB, available / GIB)
    return True
