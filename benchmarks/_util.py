"""Shared helpers of the benchmark scripts: argument parsing, tables, the JSON last line."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller workload (minutes -> seconds)")
    p.add_argument("--json", action="store_true", help="end with one JSON object of the figures")
    return p


def table(title: str, header: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*[f"{x:.4g}" if isinstance(x, float) else str(x) for x in r])
    Console(file=sys.stdout, width=140).print(t)


def peak_gflops(repeats: int = 5, dtype: str = "float32") -> float:
    """The machine's matmul peak now in ``dtype``: the median GFLOP/s of square matmuls of 512,
    1024 and 2048 (the best size counts), with torch's current thread setting."""
    import time

    import torch
    dt = getattr(torch, dtype)
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
        a @ b
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        best = max(best, 2 * n ** 3 / statistics.median(ts) / 1e9)
    return best


def linear_params(cfg) -> tuple[int, int]:
    """Weights of a Llama config's linear layers: (all decoder layers, the output head)."""
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    hd = d // cfg.num_attention_heads
    body = L * (2 * d * d + 2 * d * cfg.num_key_value_heads * hd + 3 * d * cfg.intermediate_size)
    return body, d * cfg.vocab_size


def linear_gflop(cfg, tokens: int, head_tokens: int) -> float:
    """GFLOP of the linear layers for ``tokens`` positions (2 per weight), the output head for
    ``head_tokens`` of them only (a prompt needs it at its last position): a lower bound of the
    work, since attention and elementwise ops are left out."""
    body, head = linear_params(cfg)
    return 2 * (tokens * body + head_tokens * head) / 1e9


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def emit(figures: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures))
