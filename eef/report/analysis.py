"""The numbers behind every view of the report, computed from ``Run`` objects as plain data (so
tests can check them against the run directory, and the HTML/plots only lay them out).

Aggregation over seeds: run directories evaluating the same method are its seeds; a figure is
the mean over them and ± the sample standard deviation (0 with one run), as ``eef compare``'s
results table does.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from eef.report.rundata import (NAVIGATION_CLICKS, SINGLE_STAGE, Run, TaskCategories, as_int,
                                method_order, navigation_skill)


def mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


# -- win rate / score per iteration ----------------------------------------------------------
@dataclass
class CurvePoint:
    """One method at one iteration, over the runs that evaluated it."""

    iteration: int
    runs: int
    win_rate: float          # mean over runs, in [0, 1]
    win_rate_std: float
    mean_score: float        # mean over runs, 0-100
    mean_score_std: float
    episodes: int            # evaluation episodes summed over runs
    env_steps: float | None = None          # mean cumulative counted budget (None: unknown)
    generated_tokens: float | None = None
    budget: dict[str, float] = field(default_factory=dict)  # every BUDGET_KEYS key, mean
    per_run: dict[str, float] = field(default_factory=dict)  # run name -> win rate


def curves(runs: list[Run]) -> dict[str, list[CurvePoint]]:
    """``{method: [CurvePoint per iteration]}`` over every run evaluating the method."""
    by: dict[str, dict[int, list[tuple[Run, dict[str, Any]]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for m in run.methods:
            for it, row in run.curve(m).items():
                by[m][it].append((run, row))
    out: dict[str, list[CurvePoint]] = {}
    for m in method_order(by):
        pts = []
        for it in sorted(by[m]):
            rows = by[m][it]
            wr, wr_s = mean_std([float(r["win_rate"]) for _, r in rows])
            sc, sc_s = mean_std([float(r["mean_score"]) for _, r in rows])
            budgets = [run.budget(m, it) for run, _ in rows]
            have = [b for b in budgets if b is not None]
            mean = {k: statistics.fmean(b[k] for b in have) for k in have[0]} if have else {}
            pts.append(CurvePoint(
                it, len(rows), wr, wr_s, sc, sc_s, sum(r["n"] for _, r in rows),
                mean.get("env_steps"), mean.get("generated_tokens"),
                per_run={run.name: float(r["win_rate"]) for run, r in rows}, budget=mean))
        out[m] = pts
    return out




def final_iteration(run: Run, method: str) -> dict[str, Any] | None:
    c = run.curve(method)
    return c[max(c)] if c else None


@dataclass
class ExpertSummary:
    runs: int
    win_rate: float
    win_rate_std: float
    mean_score: float
    mean_score_std: float
    episodes: int
    split: str


def expert_summary(runs: list[Run]) -> ExpertSummary | None:
    rows = [r.expert_row for r in runs if r.expert_row is not None]
    if not rows:
        return None
    wr, wr_s = mean_std([float(r["win_rate"]) for r in rows])
    sc, sc_s = mean_std([float(r["mean_score"]) for r in rows])
    splits = sorted({str(r.get("split")) for r in rows})
    return ExpertSummary(len(rows), wr, wr_s, sc, sc_s, sum(r["n"] for r in rows),
                         "/".join(splits))


# -- per-task-category breakdown ---------------------------------------------------------------
@dataclass
class Cell:
    wins: int = 0
    n: int = 0
    score: float = 0.0  # summed reward (0-1)

    @property
    def win_rate(self) -> float:
        return self.wins / self.n if self.n else float("nan")

    @property
    def mean_score(self) -> float:
        return 100.0 * self.score / self.n if self.n else float("nan")


def category_breakdown(runs: list[Run], cats: TaskCategories
                       ) -> tuple[list[str], list[str], dict[str, dict[str, Cell]]]:
    """(categories, columns, {category: {column: Cell}}): the expert's episodes on the training
    tasks and each method's final-iteration evaluation episodes, pooled over runs."""
    table: dict[str, dict[str, Cell]] = defaultdict(lambda: defaultdict(Cell))
    cols: list[str] = []
    for run in runs:
        for t in run.experts:
            _add(table[cats(t.task_id)]["expert (train)"], t)
    if any(run.experts for run in runs):
        cols.append("expert (train)")
    methods = method_order({m for r in runs for m in r.methods})
    for m in methods:
        col = f"{m} (final)"
        for run in runs:
            row = final_iteration(run, m)
            if row is None:
                continue
            for t in run.eval_trajectories(row):
                _add(table[cats(t.task_id)][col], t)
        if any(col in v for v in table.values()):
            cols.append(col)
    return sorted(table), cols, table


def _add(c: Cell, t) -> None:
    c.n += 1
    c.wins += bool(t.success)
    c.score += float(t.reward)


# -- the expert vs the agents on the training tasks -----------------------------------------------
@dataclass
class TrainTaskRow:
    method: str
    iteration: int
    tasks: int
    solved: int                  # tasks with at least one successful s_0 rollout
    expert_solved: int           # of those tasks, solved by the expert
    solved_expert_failed: int    # tasks the expert failed and the agent solved


def train_task_comparison(runs: list[Run]) -> list[TrainTaskRow]:
    """Per method and iteration (pooled over runs): how many training tasks the agent solved
    from s_0 in its rollouts, next to the expert on the same tasks."""
    acc: dict[tuple[str, int], TrainTaskRow] = {}
    for run in runs:
        expert_ok = {t.task_id: t.success for t in run.experts}
        for m in run.methods:
            for it in sorted(run.budget_rows(m)):
                trajs = run.start_rollouts(m, it)
                if not trajs:
                    continue
                solved: dict[str, bool] = defaultdict(bool)
                for t in trajs:
                    solved[t.task_id] |= bool(t.success)
                row = acc.setdefault((m, it), TrainTaskRow(m, it, 0, 0, 0, 0))
                row.tasks += len(solved)
                row.solved += sum(solved.values())
                row.expert_solved += sum(bool(expert_ok.get(k)) for k in solved)
                row.solved_expert_failed += sum(v and not expert_ok.get(k, False)
                                                for k, v in solved.items())
    return [acc[k] for k in sorted(acc, key=lambda k: (method_order([x[0] for x in acc]).index(k[0]), k[1]))]


# -- Figure 2: navigation skills and recovery-state samples ------------------------------------
@dataclass
class NavigationRow:
    who: str
    successes: int
    with_navigation: int
    per_skill: dict[str, int]

    @property
    def share(self) -> float:
        return self.with_navigation / self.successes if self.successes else float("nan")


def navigation_shares(runs: list[Run]) -> list[NavigationRow]:
    """Share of successful episodes that use a navigation skill (``click[next >]``,
    ``click[< prev]``, ``click[back to search]``): the expert's successes on the training tasks
    and each method's successful final-iteration test episodes, pooled over runs.  WebShop only
    (other envs have no such actions: empty list)."""
    if not any(r.env == "webshop" for r in runs):
        return []
    out = []

    def row(who: str, trajs) -> NavigationRow:
        wins = [t for t in trajs if t.success]
        per = Counter()
        used = 0
        for t in wins:
            skills = {navigation_skill(a) for a in t.actions} - {None}
            used += bool(skills)
            per.update(skills)
        return NavigationRow(who, len(wins), used, {k: per.get(k, 0) for k in NAVIGATION_CLICKS})

    ws = [r for r in runs if r.env == "webshop"]
    if any(r.experts for r in ws):
        out.append(row("expert (train)", [t for r in ws for t in r.experts]))
    for m in method_order({m for r in ws for m in r.methods}):
        trajs = []
        for r in ws:
            fin = final_iteration(r, m)
            if fin is not None:
                trajs += r.eval_trajectories(fin)
        out.append(row(m, trajs))
    return out


ORIGINS = ("expert", "agent from s0", "EEF from s0", "EEF from recovery state")


def sample_origin(t) -> str:
    """Where a training trajectory comes from: the expert, the agent's own rollout from the start
    state, or an EEF sample whose important state is s_0 / a recovery state (Lan et al. 2025,
    §3: recovery state = an unsolvable state right after a solvable one)."""
    kind = t.source.kind
    if kind == "eef":
        rec = t.meta.get("recovery")
        if rec is None:
            rec = as_int(t.meta.get("important_state")) > 0
        return ORIGINS[3] if rec else ORIGINS[2]
    if kind == "expert":
        return ORIGINS[0]
    return ORIGINS[1]


@dataclass
class OriginRow:
    method: str
    iteration: int
    runs: int
    counts: dict[str, int]

    @property
    def agent_samples(self) -> int:
        return sum(v for k, v in self.counts.items() if k != ORIGINS[0])

    @property
    def recovery_share(self) -> float:
        """Recovery-state samples among the agent-generated ones (start + recovery states)."""
        a = self.agent_samples
        return self.counts.get(ORIGINS[3], 0) / a if a else float("nan")


def sample_origins(runs: list[Run]) -> list[OriginRow]:
    """Per method and iteration: the training set's samples by origin, summed over runs."""
    acc: dict[tuple[str, int], OriginRow] = {}
    for run in runs:
        for m in run.methods:
            its = [0] if m in SINGLE_STAGE else sorted(run.budget_rows(m))
            for it in its:
                data = run.training_set(m, it)
                if data is None:
                    continue
                row = acc.setdefault((m, it), OriginRow(m, it, 0, {o: 0 for o in ORIGINS}))
                row.runs += 1
                for t in data:
                    if t.source.kind != "pretrain":  # model.replay: not a sample
                        row.counts[sample_origin(t)] += 1
    ms = method_order({k[0] for k in acc})
    return [acc[k] for k in sorted(acc, key=lambda k: (ms.index(k[0]), k[1]))]
