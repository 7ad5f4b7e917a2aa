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


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def emit(figures: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures))
