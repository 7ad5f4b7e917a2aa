"""Reading run directories for the report: metrics, evaluations, budgets, EEF labels and the
trajectories behind them, tolerant of runs that were killed mid-write.

A run directory is what ``eef run`` writes (see docs/pipeline.md): ``config.yaml``,
``metrics.jsonl`` (one JSON row per evaluation / stage summary), ``expert.jsonl``,
``rollouts/...``, ``data/...`` and ``labels/...``.  ``eef compare`` writes one such directory
per seed (``OUT/seed0``, ``OUT/seed1``, ...), each holding every compared method; passing the
compare output directory itself expands to those run directories.

Bad input never ends in a traceback: a path that is no run directory raises
``NotARunDirError``; a malformed line of ``metrics.jsonl`` or of a trajectory file is skipped and
reported as a ``ReportWarning`` (and listed in the report).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import yaml

from eef.algorithms.labels import LabelRecord
from eef.algorithms.rundir import current_rows
from eef.algorithms.stages import EXPERT_EVAL_STAGE
from eef.rollout.budget import BUDGET_KEYS
from eef.trajectory import Trajectory, TrajectoryFormatError

#: the methods in the order of the paper's table (and the baselines eef adds to it)
METHODS = ("sft", "sft_all", "rft", "rft_xn", "eef", "eto")
#: methods trained once (iteration 0 only) on expert trajectories, data/METHOD.jsonl
SINGLE_STAGE = ("sft", "sft_all")


def method_order(ms: Iterable[str]) -> list[str]:
    """``ms`` in the order of ``METHODS``; unknown names last, by name."""
    return sorted(ms, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))

#: WebShop's navigation skills (Lan et al. 2025, Figure 2): the click labels of
#: ``eef.envs.webshop.env`` (``NEXT_PAGE``, ``PREV_PAGE``, ``BACK_TO_SEARCH``), matched
#: case-insensitively as the env does.
NAVIGATION_CLICKS = ("next >", "< prev", "back to search")
_CLICK = re.compile(r"^\s*click\s*\[(.*)\]\s*$", re.IGNORECASE | re.DOTALL)
_LABELS_FILE = re.compile(r"^(?P<method>.+)-it(?P<it>\d+)\.jsonl$")


class ReportError(ValueError):
    """The report cannot be built from the given input (the message says why)."""


class NotARunDirError(ReportError):
    """A path given as a run directory is not one (no ``metrics.jsonl`` / ``config.yaml``)."""


class ReportWarning(UserWarning):
    """Input the report skipped (a malformed line, a missing file); the report lists them too."""


def navigation_skill(action: str) -> str | None:
    """The navigation click an action is (``next >``, ``< prev``, ``back to search``), else None."""
    m = _CLICK.match(action or "")
    if not m:
        return None
    arg = m.group(1).strip().lower()
    return arg if arg in NAVIGATION_CLICKS else None


def is_run_dir(p: Path) -> bool:
    return p.is_dir() and ((p / "metrics.jsonl").is_file() or (p / "config.yaml").is_file())


def expand_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from the given paths: a run directory itself, or a directory whose
    children are run directories (``eef compare``'s output).  Raises ``NotARunDirError``."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise NotARunDirError(f"{p}: no such directory")
        if not p.is_dir():
            raise NotARunDirError(f"{p}: not a directory (expected a run directory written by "
                                  "`eef run` or `eef compare`)")
        if is_run_dir(p):
            out.append(p)
            continue
        kids = sorted((c for c in p.iterdir() if is_run_dir(c)), key=lambda c: _natural(c.name))
        if not kids:
            raise NotARunDirError(f"{p}: not a run directory (no metrics.jsonl or config.yaml, "
                                  "and no run directories inside)")
        out.extend(kids)
    if not out:
        raise NotARunDirError("no run directories given")
    seen: set[Path] = set()
    uniq = []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(p)
    return uniq


def _natural(s: str) -> list[Any]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


@dataclass
class Run:
    """One run directory, read lazily.  ``warnings`` collects what was skipped."""

    path: Path
    name: str
    warnings: list[str] = field(default_factory=list)
    _eval_cache: dict[str, list[Trajectory]] = field(default_factory=dict, repr=False)

    # -- small helpers ----------------------------------------------------------------------
    def warn(self, msg: str) -> None:
        if msg in self.warnings:  # a file read twice warns once
            return
        self.warnings.append(msg)
        warnings.warn(msg, ReportWarning, stacklevel=3)

    def _json_lines(self, rel: str) -> list[dict[str, Any]]:
        """JSON objects of a JSONL file; malformed lines skipped with a warning."""
        p = self.path / rel
        if not p.is_file():
            return []
        rows = []
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            self.warn(f"{p}: unreadable ({e})")
            return []
        # split on "\n" only: JSON text may hold U+2028 etc., which str.splitlines() splits on
        lines = text.split("\n")
        bad: list[str] = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                last = i == len(lines) and not text.endswith("\n")
                bad.append(f"line {i}: {'half-written' if last else 'malformed'} ({e.msg})")
                continue
            if not isinstance(d, dict):
                bad.append(f"line {i}: not a JSON object")
                continue
            rows.append(d)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            self.warn(f"{p}: skipped {len(bad)} line(s): {'; '.join(bad[:3])}{more}")
        return rows

    def trajectories(self, rel: str) -> list[Trajectory]:
        out = []
        for i, d in enumerate(self._json_lines(rel), 1):
            try:
                out.append(Trajectory.from_dict(d))
            except TrajectoryFormatError as e:
                self.warn(f"{self.path / rel}: record {i} skipped ({e})")
        return out

    # -- config and metrics -----------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        p = self.path / "config.yaml"
        if not p.is_file():
            self.warn(f"{p}: missing")
            return {}
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            self.warn(f"{p}: not valid YAML ({str(e).splitlines()[0]})")
            return {}
        if not isinstance(cfg, dict):
            self.warn(f"{p}: not a mapping")
            return {}
        return cfg

    @property
    def config_text(self) -> str:
        p = self.path / "config.yaml"
        return p.read_text(encoding="utf-8", errors="replace") if p.is_file() else ""

    @property
    def env(self) -> str:
        return str((self.config.get("env") or {}).get("name") or self._env_from_tasks())

    def _env_from_tasks(self) -> str:
        for r in self.eval_rows:
            for t in self.trajectories(f"rollouts/{r['stage']}.jsonl")[:1]:
                return t.env
        return "unknown"

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @cached_property
    def metrics(self) -> list[dict[str, Any]]:
        rows = self._json_lines("metrics.jsonl")
        if not (self.path / "metrics.jsonl").is_file():
            self.warn(f"{self.path / 'metrics.jsonl'}: missing (no evaluation to report)")
        named = [r for r in rows if isinstance(r.get("stage"), str)]
        if len(named) < len(rows):
            self.warn(f"{self.path / 'metrics.jsonl'}: a row without a stage name skipped")
        return list(current_rows(named).values())

    @cached_property
    def train_rows(self) -> list[dict[str, Any]]:
        """Training records (``stage`` = ``train/...``) in the order they were written; a
        ``decisions`` entry that is not a mapping (written by hand, damaged) is dropped with a
        warning."""
        out = []
        for r in self.metrics:
            if str(r["stage"]).startswith("train/"):
                row = dict(r)
                if "decisions" in row and not isinstance(row["decisions"], dict):
                    self.warn(f"{self.path / 'metrics.jsonl'}: row {r['stage']!r}: decisions "
                              f"{row['decisions']!r} is not a mapping; left out")
                    del row["decisions"]
                out.append(row)
        return out

    @cached_property
    def eval_rows(self) -> list[dict[str, Any]]:
        """Evaluation rows (``stage`` = ``eval/...``) with a method and usable numbers."""
        out = []
        for r in self.metrics:
            if str(r["stage"]).startswith("eval/"):
                row = self._clean(r, need_method=True)
                if row is not None:
                    out.append(row)
        return out

    def _clean(self, r: dict[str, Any], need_method: bool) -> dict[str, Any] | None:
        """The row with numeric ``win_rate`` / ``mean_score`` / ``n`` / ``iteration``, or None
        (with a warning) when it has no usable win rate."""
        where = f"{self.path / 'metrics.jsonl'}: row {r['stage']!r}"
        if (need_method and not isinstance(r.get("method"), str)) or not _num(r.get("win_rate")):
            self.warn(f"{where} lacks {'a method or ' if need_method else ''}a numeric win_rate; "
                      "skipped")
            return None
        row = dict(r)
        if not _num(row.get("mean_score")):
            if "mean_score" in row:
                self.warn(f"{where}: mean_score {row['mean_score']!r} is not a number")
            row["mean_score"] = float("nan")
        row["n"] = int(row["n"]) if _num(row.get("n")) else 0
        it = row.get("iteration")
        row["iteration"] = int(it) if _num(it) else 0
        return row

    @cached_property
    def expert_row(self) -> dict[str, Any] | None:
        r = next((r for r in self.metrics if r["stage"] == "expert"), None)
        return self._clean(r, need_method=False) if r is not None else None

    @cached_property
    def expert_eval_rows(self) -> list[dict[str, Any]]:
        """The expert's evaluations on the eval tasks (``eef compare``'s ``expert`` row:
        stages ``expert/eval``, ``expert/eval/J``), each with ``output``, its episodes file."""
        out = []
        for r in self.metrics:
            st = str(r["stage"])
            if st == EXPERT_EVAL_STAGE or st.startswith(EXPERT_EVAL_STAGE + "/"):
                row = self._clean(r, need_method=True)
                if row is not None:
                    row.setdefault("output", "rollouts/eval/expert.jsonl" if st == EXPERT_EVAL_STAGE
                                   else f"rollouts/eval/expert/{st.rsplit('/', 1)[1]}.jsonl")
                    out.append(row)
        return out

    @property
    def methods(self) -> list[str]:
        """Methods evaluated in this run, in the order of the paper's table."""
        return method_order({r["method"] for r in self.eval_rows})

    def curve(self, method: str) -> dict[int, dict[str, Any]]:
        """``{iteration: eval row}``; iteration 0 of an iterative method is the SFT model it
        starts from (every method shares it, docs/pipeline.md)."""
        rows = {r["iteration"]: r for r in self.eval_rows if r["method"] == method}
        if method != "sft" and 0 not in rows:
            sft = next((r for r in self.eval_rows if r["method"] == "sft"
                        and r["iteration"] == 0), None)
            if sft is not None and rows:
                rows[0] = sft
        return dict(sorted(rows.items()))

    def budget(self, method: str, iteration: int) -> dict[str, float] | None:
        """Cumulative counted budget of ``method`` up to ``iteration`` (every key of
        ``eef.rollout.budget.BUDGET_KEYS``; 0 when a run did not count it) from its
        ``METHOD/itI/budget`` row; zero at iteration 0 (SFT uses only the expert's
        trajectories)."""
        if iteration == 0:
            return dict.fromkeys(BUDGET_KEYS, 0.0)
        r = next((r for r in self.metrics if r["stage"] == f"{method}/it{iteration}/budget"), None)
        b = (r or {}).get("budget")
        if not isinstance(b, dict):
            return None
        if not all(_num(b.get(k) or 0) for k in BUDGET_KEYS):
            self.warn(f"{self.path / 'metrics.jsonl'}: budget of {method}/it{iteration} is not "
                      "numeric; ignored")
            return None
        return {k: float(b.get(k) or 0) for k in BUDGET_KEYS}

    def budget_rows(self, method: str) -> dict[int, dict[str, Any]]:
        out = {}
        for r in self.metrics:
            m = re.fullmatch(rf"{re.escape(method)}/it(\d+)/budget", str(r["stage"]))
            if m:
                out[int(m.group(1))] = r
        return dict(sorted(out.items()))

    # -- trajectories -----------------------------------------------------------------------
    def eval_trajectories(self, row: dict[str, Any]) -> list[Trajectory]:
        """The episodes of an evaluation row (of ``eval_rows`` or ``expert_eval_rows``)."""
        rel = str(row.get("output") or f"rollouts/{row['stage']}.jsonl")
        if rel not in self._eval_cache:
            self._eval_cache[rel] = self.trajectories(rel)
        return self._eval_cache[rel]

    @cached_property
    def experts(self) -> list[Trajectory]:
        return self.trajectories("expert.jsonl")

    @cached_property
    def experts_by_id(self) -> dict[str, Trajectory]:
        from eef.rollout.engine import trajectory_id
        return {trajectory_id(t): t for t in self.experts}

    def start_rollouts(self, method: str, iteration: int) -> list[Trajectory]:
        return self.trajectories(f"rollouts/{method}/it{iteration}/s0.jsonl")

    def simulations(self, method: str, iteration: int) -> list[Trajectory]:
        return self.trajectories(f"rollouts/{method}/it{iteration}/sim.jsonl")

    def training_set(self, method: str, iteration: int) -> list[Trajectory] | None:
        rel = (f"data/{method}.jsonl" if method in SINGLE_STAGE else "data/sft.jsonl") \
            if iteration == 0 else f"data/{method}/it{iteration}.jsonl"
        return self.trajectories(rel) if (self.path / rel).is_file() else None

    def label_files(self) -> list[tuple[str, int, str]]:
        """``(method, iteration, relative path)`` of ``labels/METHOD-itI.jsonl``."""
        d = self.path / "labels"
        out = []
        if d.is_dir():
            for p in d.iterdir():
                m = _LABELS_FILE.match(p.name)
                if m and p.is_file():
                    out.append((m["method"], int(m["it"]), f"labels/{p.name}"))
        return sorted(out, key=lambda x: (x[0], x[1]))

    def label_records(self, rel: str) -> list[LabelRecord]:
        recs = []
        for i, r in enumerate(self._json_lines(rel), 1):
            try:
                recs.append(LabelRecord.from_dict(r))
            except ValueError:
                self.warn(f"{self.path / rel}: record {i} lacks task_id / states / solved / labels;"
                          " skipped")
        return recs


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def as_int(x: Any, default: int = 0) -> int:
    """``x`` as an int (numbers and digit strings), else ``default``: fields of hand-edited or
    foreign files must not crash the report."""
    if _num(x):
        return int(x)
    if isinstance(x, str) and x.strip().lstrip("-").isdigit():
        return int(x)
    return default


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """``Run`` objects of the given run directories (compare output directories expand); each
    is named by its path relative to the common parent of all of them."""
    dirs = expand_run_dirs(paths)
    resolved = [d.resolve() for d in dirs]
    names = _short_names(resolved)
    return [Run(d, n) for d, n in zip(dirs, names)]


def _short_names(paths: list[Path]) -> list[str]:
    if len(paths) == 1:
        return [paths[0].name or str(paths[0])]
    parts = [p.parts for p in paths]
    common = 0
    while all(len(x) > common + 1 for x in parts) and len({x[common] for x in parts}) == 1:
        common += 1
    return ["/".join(x[common:]) for x in parts]


# -- task categories -------------------------------------------------------------------------
class TaskCategories:
    """Category of a task id: WebShop's product category (``beauty``, ``electronics``, ...) from
    the catalogue in the data dir when it is there; ScienceWorld's task type from the id
    (``sciworld/<task>/<variation>``); otherwise the id's middle part."""

    def __init__(self, data_dir: str | None = None):
        self._data_dir = data_dir
        self._webshop: dict[str, str] | None = None
        self.note: str | None = None

    def _webshop_categories(self) -> dict[str, str]:
        if self._webshop is None:
            self._webshop = {}
            try:
                from eef.envs.webshop.data import load_catalogue
                cat = load_catalogue(self._data_dir)
                self._webshop = {a: str(p.get("category") or "uncategorised")
                                 for a, p in cat.products.items()}
            except (OSError, ValueError) as e:  # DataNotFoundError is an OSError
                self.note = (f"WebShop product categories unavailable ({type(e).__name__}); "
                             "tasks are grouped by product id")
        return self._webshop

    def __call__(self, task_id: str) -> str:
        parts = str(task_id).split("/")
        if parts[0] == "webshop" and len(parts) >= 2:
            cats = self._webshop_categories()
            return cats.get(parts[1], parts[1] if not cats else "uncategorised")
        if parts[0] == "sciworld" and len(parts) >= 2:
            return parts[1]
        return parts[1] if len(parts) >= 3 else "all"

