"""Progress display: a live bar on a terminal, plain lines in a log file.

A live bar redraws itself with carriage returns and cursor moves; written to a file (``eef run
> run.log 2>&1``) that is a heap of fragments.  Off a terminal, both bars below print one plain
line per task every ``LOG_EVERY`` seconds and when it finishes instead.

* ``Progress``: ``rich.progress.Progress`` (the rollouts' and the report's bars); a plain line
  is the text of its columns (``expert:heuristic on webshop 12/40 win 25.0% 0:00:31 ...``).
* ``tqdm``: ``tqdm.auto.tqdm`` (training and preset builds); a plain line is
  ``train: 30/200 (15%) [00:42<04:00, 1.41s/it, loss=0.8]``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.progress import Progress as _RichProgress
from rich.progress import TaskID
from rich.text import Text
from tqdm.auto import tqdm as _tqdm

#: seconds between two plain progress lines of one bar
LOG_EVERY = 30.0


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress(_RichProgress):
    """rich's progress display on a terminal; elsewhere plain lines (see the module doc)."""

    def __init__(self, *columns: Any, disable: bool = False, every: float = LOG_EVERY,
                 **kwargs: Any):
        super().__init__(*columns, disable=disable, **kwargs)
        self.plain = not disable and not (self.console.is_terminal or self.console.is_jupyter)
        if self.plain:  # the live display stays off; ``update`` prints the lines
            self.disable = True
        self.every = every
        self._logged: dict[TaskID, tuple[float, float]] = {}  # task -> (time, completed)

    def plain_line(self, task_id: TaskID) -> str:
        """The text of the columns for ``task_id`` (bars left out)."""
        task = self._tasks[task_id]
        parts = []
        for col in self.columns:
            r = Text.from_markup(col.format(task=task)) if isinstance(col, str) \
                else col.render(task)
            if isinstance(r, Text) and r.plain.strip():
                parts.append(r.plain.strip())
        return " ".join(parts)

    def _log(self, task_id: TaskID, force: bool = False) -> None:
        task = self._tasks[task_id]
        at, done = self._logged.get(task_id, (-float("inf"), -1.0))
        now = time.monotonic()
        if task.completed == done or not (force or task.finished or now - at >= self.every):
            return
        self._logged[task_id] = (now, task.completed)
        self.console.print(self.plain_line(task_id), markup=False, highlight=False,
                           soft_wrap=True)

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(*args, **kwargs)
        if self.plain:
            self._log(task_id, force=True)
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        if self.plain:
            self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        if self.plain:
            self._log(task_id)

    def stop(self) -> None:
        if not self.plain:
            return super().stop()
        for task_id in list(self._tasks):
            self._log(task_id, force=True)


class tqdm(_tqdm):  # noqa: N801  (the name callers know)
    """``tqdm`` on a terminal; elsewhere plain lines (see the module doc)."""

    PLAIN_FORMAT = "{desc} {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, " \
                   "{rate_fmt}{postfix}]"

    def __init__(self, *args: Any, every: float = LOG_EVERY, **kwargs: Any):
        self.plain = not _isatty(kwargs.get("file") or sys.stderr)
        if self.plain:
            kwargs.setdefault("mininterval", every)
            kwargs.setdefault("bar_format", self.PLAIN_FORMAT)
            if kwargs.get("desc"):
                kwargs["desc"] = f"{kwargs['desc']}:"
        self.every, self._last_line, self._last_t = every, "", -float("inf")
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None,
                force: bool = False) -> bool:
        if not self.plain:
            return super().display(msg, pos)
        if msg == "":  # a redraw would clear the bar: a log has nothing to clear
            return False
        now = time.monotonic()
        if not force and now - self._last_t < self.every:  # e.g. set_postfix's refresh
            return True
        line = (str(self) if msg is None else msg).strip()
        if line and line != self._last_line:
            self._last_line, self._last_t = line, now
            self.fp.write(line + "\n")
            self.fp.flush()
        return True

    def close(self) -> None:
        if self.plain and not self.disable:
            self.display(force=True)  # the final state, once
            self.leave = False  # nothing to leave or to clear
        super().close()
