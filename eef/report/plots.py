"""The report's plots as PNG data URIs (matplotlib's Agg canvas, no display, no pyplot state)."""

from __future__ import annotations

import base64
import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eef.report.analysis import ORIGINS, Cell, CurvePoint, NavigationRow, OriginRow

COLORS = {"sft": "#7f7f7f", "rft": "#1f77b4", "rft_xn": "#ff7f0e", "eef": "#2ca02c",
          "sft_all": "#bcbd22", "eto": "#d62728",
          "expert": "#9467bd", "expert (train)": "#9467bd"}
_CYCLE = ["#8c564b", "#e377c2", "#17becf", "#aec7e8", "#98df8a"]


def color(name: str, i: int = 0) -> str:
    return COLORS.get(name.split(" ")[0], _CYCLE[i % len(_CYCLE)])


def _png(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite(x: float | None) -> bool:
    return x is not None and not math.isnan(x)


def plot_curves(curves: dict[str, list[CurvePoint]]) -> str:
    """Win rate (%) and mean score per iteration, mean ± std over runs (shaded)."""
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for i, (m, pts) in enumerate(curves.items()):
        xs = [p.iteration for p in pts]
        for ax, mean, std in ((axes[0], [100 * p.win_rate for p in pts],
                               [100 * p.win_rate_std for p in pts]),
                              (axes[1], [p.mean_score for p in pts], [p.mean_score_std for p in pts])):
            ax.plot(xs, mean, marker="o", color=color(m, i), label=f"{m} (n={max(p.runs for p in pts)})")
            ax.fill_between(xs, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                            color=color(m, i), alpha=0.15, linewidth=0)
    for ax, name in zip(axes, ("win rate (%)", "mean score (0-100)")):
        ax.set_xlabel("iteration")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    return _png(fig)


def plot_budget(curves: dict[str, list[CurvePoint]]) -> str:
    """Win rate against the cumulative counted budget: env steps and generated tokens."""
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    for ax, attr, name in ((axes[0], "env_steps", "env steps (cumulative)"),
                           (axes[1], "generated_tokens", "generated tokens (cumulative)")):
        for i, (m, pts) in enumerate(curves.items()):
            pts = [p for p in pts if _finite(getattr(p, attr))]
            if not pts:
                continue
            ax.errorbar([getattr(p, attr) for p in pts], [100 * p.win_rate for p in pts],
                        yerr=[100 * p.win_rate_std for p in pts], marker="o", capsize=3,
                        color=color(m, i), label=m)
        ax.set_xlabel(name)
        ax.set_ylabel("win rate (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def plot_categories(cats: list[str], cols: list[str], table: dict[str, dict[str, Cell]]) -> str:
    """Grouped bars: win rate per task category and column (expert, methods)."""
    fig = Figure(figsize=(max(6, 0.9 * len(cats) * max(1, len(cols)) / 2 + 3), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(cols))
    for j, col in enumerate(cols):
        vals = [100 * table[c][col].win_rate if col in table[c] else 0.0 for c in cats]
        ax.bar([i + j * width for i in range(len(cats))], [0 if math.isnan(v) else v for v in vals],
               width, color=color(col, j), label=col)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cats))])
    ax.set_xticklabels(cats, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("win rate (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _png(fig)


def plot_navigation(rows: list[NavigationRow]) -> str:
    """Share (%) of successful episodes using a navigation skill, per method."""
    fig = Figure(figsize=(6, 3.4))
    ax = fig.subplots()
    vals = [0.0 if math.isnan(r.share) else 100 * r.share for r in rows]
    bars = ax.bar([r.who for r in rows], vals, color=[color(r.who, i) for i, r in enumerate(rows)])
    for b, r in zip(bars, rows):
        ax.annotate(f"{r.with_navigation}/{r.successes}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("successes using navigation (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def plot_origins(rows: list[OriginRow]) -> str:
    """Stacked bars: training samples by origin per method and iteration."""
    fig = Figure(figsize=(max(6, 0.55 * len(rows) + 3), 3.6))
    ax = fig.subplots()
    names = [f"{r.method}/it{r.iteration}" for r in rows]
    bottom = [0.0] * len(rows)
    palette = ["#9467bd", "#1f77b4", "#98df8a", "#2ca02c"]
    for o, c in zip(ORIGINS, palette):
        vals = [float(r.counts.get(o, 0)) for r in rows]
        ax.bar(names, vals, bottom=bottom, color=c, label=o)
        bottom = [a + b for a, b in zip(bottom, vals)]
    ax.set_ylabel("training samples (summed over runs)")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _png(fig)
