"""The process's resident memory, and giving freed heap memory back to the system.

A long run (``eef compare``: trainings and rollouts one after another in one process) frees the
tensors of one stage before the next starts, but glibc's allocator keeps much of that memory
mapped for reuse: measured on the SmolLM2 recipe (docs/models.md, "Training memory") the
resident set grew from 10.6 GB in the first training to 19.0 GB in the third.  ``release``
runs the garbage collector, then ``malloc_trim(0)``, which returns the free pages of every
glibc arena to the system; the run directory calls it after each stage, the training loop
every ``train.trim_every`` steps.  On a C library
without ``malloc_trim`` (musl, macOS) it only collects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from functools import lru_cache


def rss_mb(pid: int | str = "self") -> int | None:
    """The resident set of process ``pid`` (default: this one) in MB; None where ``/proc``
    does not show it (no such process, another system)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20
    except (OSError, ValueError, IndexError):
        return None


@lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release() -> dict[str, int | None]:
    """Collect garbage and return freed heap pages to the system.  Returns the resident set
    before and after (``{"before_mb", "after_mb"}``, None where unknown)."""
    before = rss_mb()
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    return {"before_mb": before, "after_mb": rss_mb()}
