"""The process's resident memory, and giving freed heap memory back to the system.

A long run (``eef compare``: trainings and rollouts one after another in one process) frees the
tensors of one stage before the next starts, but glibc's allocator keeps much of that memory
mapped for reuse: measured on the SmolLM2 recipe (docs/models.md, "Training memory") the
resident set grew from 10.6 GB in the first training to 19.0 GB in the third.  ``release``
runs the garbage collector, then ``malloc_trim(0)``, which returns the free pages of every
glibc arena to the system; the run directory calls it after each stage, the training loop
every ``train.trim_every`` steps.  On a C library
without ``malloc_trim`` (musl, macOS) it only collects.

Trimming does not bound a training's peak: glibc keeps the high-water mark of tensors of
ever-changing shapes.  Under jemalloc the peak follows each step's own tensors
(docs/models.md, "Training memory"), so the ``eef`` command runs on it: ``use_allocator``
re-executes the process with jemalloc preloaded (``LD_PRELOAD``) before any work starts.  ``EEF_ALLOCATOR`` chooses: ``jemalloc`` (the default;
the library ray ships, or ``EEF_JEMALLOC``'s path) or ``system``; without a jemalloc library
the process stays on the system's allocator.  ``allocator()`` says which one a process runs on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Mapping

#: the allocators ``EEF_ALLOCATOR`` chooses among (the first is the default)
ALLOCATORS = ("jemalloc", "system")


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


def jemalloc_library(environ: Mapping[str, str] = os.environ) -> str | None:
    """The jemalloc shared library to preload: ``EEF_JEMALLOC`` when set (an error if it is not
    a file), else the one the ray wheel ships, else None."""
    given = environ.get("EEF_JEMALLOC")
    if given:
        if not Path(given).is_file():
            raise ValueError(f"EEF_JEMALLOC={given!r} is not a file (a jemalloc shared "
                             "library, e.g. libjemalloc.so.2)")
        return str(Path(given).resolve())
    import importlib.util
    spec = importlib.util.find_spec("ray")  # found, not imported (importing ray takes seconds)
    if spec is None or not spec.origin:
        return None
    lib = Path(spec.origin).parent / "core" / "libjemalloc.so"
    return str(lib) if lib.is_file() else None


def allocator_env(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """The environment to re-execute this process in so that it runs on the allocator
    ``EEF_ALLOCATOR`` chooses, or None when nothing is to change (``system`` chosen, the
    library already preloaded, none found, not Linux).  A bad choice is a ``ValueError``."""
    choice = environ.get("EEF_ALLOCATOR", ALLOCATORS[0]).strip().lower()
    if choice not in ALLOCATORS:
        raise ValueError(f"EEF_ALLOCATOR={choice!r}: one of {', '.join(ALLOCATORS)}")
    if choice == "system" or not sys.platform.startswith("linux"):
        return None
    lib = jemalloc_library(environ)
    preload = environ.get("LD_PRELOAD", "")
    if lib is None or lib in preload.replace(":", " ").split():
        return None
    return {**environ, "LD_PRELOAD": f"{lib} {preload}".strip()}


def use_allocator() -> None:
    """Re-execute this process (same interpreter, same command line) on the allocator
    ``allocator_env`` names; return when nothing is to change.  Call it first thing: the
    process is replaced."""
    env = allocator_env()
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)


def allocator() -> str:
    """``jemalloc`` when this process has jemalloc mapped, else ``system``."""
    try:
        with open("/proc/self/maps") as f:
            return "jemalloc" if "jemalloc" in f.read() else "system"
    except OSError:
        return "system"
