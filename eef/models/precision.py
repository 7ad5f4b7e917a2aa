"""Which floating-point type a model runs in: ``auto`` picks bfloat16 where the hardware computes
it fast (a CUDA GPU with bf16, or a CPU with AVX512-BF16 or AMX) and the model is large enough
to gain from it, float32 otherwise.

On a 2-core Zen 4 CPU (AVX512-BF16, no AMX) torch's bf16 matmuls reach ~420 GFLOP/s against
~165 in fp32, so a 135M-parameter model decodes and trains ~1.5-2.5x faster in bf16
(``benchmarks/smollm2_agent.py``).  Models under ``SMALL_MODEL_PARAMS`` (the from-scratch tiny
preset) stay in float32: their matmuls are too small to gain, and their recorded results were
measured in float32.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

#: models with fewer parameters than this run in float32 under ``auto``
SMALL_MODEL_PARAMS = 50_000_000
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class DtypeError(ValueError):
    """An unknown dtype name."""


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX-BF16; Linux flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def fast_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 compute is fast on ``device``."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return dev.type == "cpu" and cpu_has_fast_bf16()


def check_dtype(name: str | None) -> str | None:
    """``name`` if it is ``auto``, None or a known dtype name; else a ``DtypeError``."""
    if name is None or name == "auto" or name in DTYPES:
        return name
    raise DtypeError(f"unknown dtype {name!r} (auto, {', '.join(sorted(DTYPES))})")


def choose_dtype(name: str | None, n_params: int, device: str | torch.device = "cpu"
                 ) -> torch.dtype | None:
    """The dtype of a model of ``n_params`` parameters on ``device``: ``None`` keeps the weights
    as loaded, a dtype name forces it, ``auto`` is bf16 where it is fast and the model is not
    small, float32 otherwise."""
    if check_dtype(name) is None:
        return None
    if name == "auto":
        big = n_params >= SMALL_MODEL_PARAMS
        return torch.bfloat16 if big and fast_bf16(device) else torch.float32
    return DTYPES[name]
