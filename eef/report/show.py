"""``eef show``: a trajectory pretty-printed in the terminal."""

from __future__ import annotations

from typing import Iterable

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from eef.trajectory import Trajectory

_LABEL_STYLE = {"beneficial": "green", "harmful": "red", "neutral": "yellow", "agent": "cyan",
                "unused": "dim"}


def _sep(obs: str, width: int) -> str:
    text = obs.replace(" [SEP] ", "\n")
    return text if len(text) <= width * 12 else text[: width * 12] + " …"


def render(t: Trajectory, console: Console | None = None, max_obs_lines: int = 12) -> None:
    c = console or Console()
    status = "[green]success[/]" if t.success else "[red]failure[/]"
    src = ", ".join(f"{k}={v}" for k, v in t.source.to_dict().items() if v is not None)
    c.print(Panel(Text(t.instruction or t.task_id), title=f"{t.task_id} — {status} "
                  f"reward {t.reward:.2f}, {len(t)} steps", subtitle=src or None))
    c.print(Text(_sep(t.initial_observation, c.width), style="dim"))
    for i, s in enumerate(t.steps):
        tag = f" [{s.label}]" if s.label else ""
        mask = "" if s.train else " (masked)"
        style = _LABEL_STYLE.get(s.label or "", "bold")
        head = Text(f"{i:>3} ", style="bold")
        head.append(f"{s.action}", style=style)
        head.append(f"{tag}{mask}", style=style)
        if not s.valid:
            head.append("  invalid", style="red")
        if s.reward:
            head.append(f"  reward {s.reward:.2f}", style="green")
        c.print(head)
        if s.thought:
            c.print(Text(f"    {s.thought}", style="italic"))
        lines = _sep(s.observation, c.width).splitlines()
        more = len(lines) - max_obs_lines
        body = "\n".join("    " + x for x in lines[:max_obs_lines])
        c.print(Text(body + (f"\n    … {more} more lines" if more > 0 else ""), style="dim"))


def show(trajs: Iterable[Trajectory], task: str | None = None, limit: int | None = None,
         console: Console | None = None) -> int:
    n = 0
    for t in trajs:
        if task and t.task_id != task:
            continue
        render(t, console)
        n += 1
        if limit and n >= limit:
            break
    return n
