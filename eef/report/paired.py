"""Paired per-goal differences between two policies evaluated on the same goals, with
percentile bootstrap intervals over goals (pure functions; numpy only).

Input: per policy, its evaluation runs (seeds), each a sequence of ``(goal, reward, success)``
episodes.  ``goal_means`` reduces them to one (win rate, mean score) per goal: the episodes of
a goal are averaged within a run, then over the runs that evaluated the goal.  Seeds are thus
**averaged per goal**, not paired by index: both give the same mean difference when the two
policies have the same runs, and averaging also works when they have different numbers of runs
(the expert's deterministic evaluation against three trained seeds, a method whose third seed
is missing).  The per-goal difference d_g = A_g - B_g is then the unit of resampling.

``paired_difference`` compares A and B on the goals both evaluated (the intersection; how many
goals only one of them has is reported, never silently dropped): the mean of d_g for the win
rate (a share, -1 .. 1) and the score (points, -100 .. 100), a 95% percentile bootstrap
interval of each (10,000 resamples of the goals with replacement, a fixed seed: the same input
gives the same interval), and a sign count: goals where A scored more than B, less, or the
same, with the two-sided exact sign-test p-value over the untied goals.

The interval is over goals: it says how much the difference could move with another draw of
goals from the same distribution, with the runs held as they are.  Goals that share a world
are not independent draws: WebShop-1k's 116 test goals are instructions for 40 products (17 of
them with 5 goals each), and one product's goals tend to be won or lost together.  With
``groups`` (goal -> group, e.g. ``eef.envs.task_family``) the bootstrap resamples whole
groups (a cluster bootstrap: each resample is the mean over all goals of the drawn groups),
which widens the interval to what another draw of *products* could do; ``clusters`` says how
many groups were resampled (the goals' count when ungrouped).  It does not resample seeds,
so retraining noise enters only through the per-goal averages (average several seeds per
method, ``eef compare --seeds`` / ``--train-seeds``, to shrink it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

#: bootstrap defaults: resamples, seed, interval level
RESAMPLES, SEED, LEVEL = 10_000, 0, 0.95

Episode = tuple[str, float, bool]          # (goal id, reward 0-1, success)
GoalMeans = Mapping[str, tuple[float, float]]  # goal -> (win rate 0-1, mean score 0-100)


class PairedError(ValueError):
    """The comparison cannot be made (no runs, no episodes, no goal in common)."""


def goal_means(runs: Iterable[Iterable[Episode]]) -> dict[str, tuple[float, float]]:
    """Per goal: (win rate 0-1, mean score 0-100), episodes of a goal averaged within a run,
    then over the runs that evaluated it.  Goals keep their first-seen order."""
    per: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        acc: dict[str, list[tuple[float, float]]] = {}
        for goal, reward, success in run:
            acc.setdefault(str(goal), []).append((1.0 if success else 0.0, 100.0 * float(reward)))
        for g, xs in acc.items():
            per.setdefault(g, []).append((sum(x[0] for x in xs) / len(xs),
                                          sum(x[1] for x in xs) / len(xs)))
    return {g: (sum(x[0] for x in v) / len(v), sum(x[1] for x in v) / len(v))
            for g, v in per.items()}


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the probability under p = 1/2 of a split at least as uneven
    as ``wins`` : ``losses`` (ties left out); 1.0 with no untied goal."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
                    groups: Sequence[Hashable] | None = None) -> np.ndarray:
    """Means of ``resamples`` resamples (with replacement) of the rows of ``values`` (goals x
    columns): an array (resamples x columns).  With ``groups`` (one label per row) whole
    groups are resampled, as many as there are, and each resample's mean is over all the
    rows of the drawn groups (a cluster bootstrap); one group per row is the plain
    bootstrap.  Deterministic for a seed; drawn in chunks so that memory stays bounded."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    n = len(values)
    if n == 0 or resamples < 1:
        raise PairedError("bootstrap needs at least one goal and one resample")
    if groups is not None and len(groups) != n:
        raise PairedError(f"{len(groups)} group labels for {n} goals")
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, values.shape[1]))
    if groups is None:                       # every goal its own group
        sums, sizes = values, np.ones(n)
    else:
        index: dict[Hashable, int] = {}
        codes = np.array([index.setdefault(g, len(index)) for g in groups])
        sums = np.zeros((len(index), values.shape[1]))
        np.add.at(sums, codes, values)
        sizes = np.bincount(codes, minlength=len(index)).astype(float)
    k = len(sums)
    chunk = max(1, 2_000_000 // k)
    for lo in range(0, resamples, chunk):
        hi = min(resamples, lo + chunk)
        idx = rng.integers(0, k, size=(hi - lo, k))
        out[lo:hi] = sums[idx].sum(axis=1) / sizes[idx].sum(axis=1)[:, None]
    return out


@dataclass(frozen=True)
class PairedDiff:
    """A - B on the goals both evaluated.  Win rates are shares (0-1), scores points (0-100);
    ``*_lo`` / ``*_hi``: the bootstrap interval of the mean difference."""

    a: str
    b: str
    goals: int                 # goals in common (the ones compared)
    only_a: int                # goals only A evaluated (left out)
    only_b: int                # goals only B evaluated (left out)
    clusters: int              # groups the bootstrap resampled (= goals when ungrouped)
    runs_a: int
    runs_b: int
    win_rate_a: float
    win_rate_b: float
    win_rate_diff: float
    win_rate_lo: float
    win_rate_hi: float
    score_a: float
    score_b: float
    score_diff: float
    score_lo: float
    score_hi: float
    a_better: int              # goals where A's mean score > B's
    b_better: int
    ties: int
    sign_p: float
    resamples: int
    seed: int
    level: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def note(self) -> str:
        """What the comparison left out (unequal goal sets), else ''."""
        if not (self.only_a or self.only_b):
            return ""
        return (f"{self.a} vs {self.b}: compared on the {self.goals} goals both evaluated "
                f"({self.only_a} only {self.a}, {self.only_b} only {self.b} left out)")


def paired_difference(a: GoalMeans, b: GoalMeans, *, names: tuple[str, str] = ("A", "B"),
                      runs: tuple[int, int] = (0, 0), resamples: int = RESAMPLES,
                      seed: int = SEED, level: float = LEVEL,
                      groups: Callable[[str], Hashable] | None = None) -> PairedDiff:
    """A - B over the goals both have (``goal_means`` of each): mean differences of win rate
    and score, their percentile bootstrap intervals (goals resampled, or with ``groups``, a
    function goal -> group, whole groups; both differences from the same resamples) and the
    sign count over goals.  Raises ``PairedError`` when either side is empty or they share
    no goal."""
    if not 0 < level < 1:
        raise PairedError(f"level must be in (0, 1), not {level}")
    for name, side in zip(names, (a, b)):
        if not side:
            raise PairedError(f"{name}: no evaluated goals to compare")
    common = [g for g in a if g in b]
    if not common:
        raise PairedError(f"{names[0]} and {names[1]} evaluated no goal in common")
    va = np.array([a[g] for g in common], dtype=float)
    vb = np.array([b[g] for g in common], dtype=float)
    d = va - vb
    mean = d.mean(axis=0)
    labels = [groups(g) for g in common] if groups is not None else None
    boot = bootstrap_means(d, resamples, seed, labels)
    q = 100 * (1 - level) / 2
    lo, hi = np.percentile(boot, q, axis=0), np.percentile(boot, 100 - q, axis=0)
    # zero variance (up to rounding): every resample's mean is the mean itself
    flat = np.ptp(d, axis=0) <= 1e-9 * np.maximum(1.0, np.abs(d).max(axis=0))
    lo, hi = np.where(flat, mean, lo), np.where(flat, mean, hi)
    better_a = int(np.sum(d[:, 1] > 0))
    better_b = int(np.sum(d[:, 1] < 0))
    return PairedDiff(
        names[0], names[1], len(common), sum(g not in b for g in a),
        sum(g not in a for g in b), len(set(labels)) if labels is not None else len(common),
        runs[0], runs[1],
        float(va[:, 0].mean()), float(vb[:, 0].mean()), float(mean[0]), float(lo[0]),
        float(hi[0]), float(va[:, 1].mean()), float(vb[:, 1].mean()), float(mean[1]),
        float(lo[1]), float(hi[1]), better_a, better_b, len(common) - better_a - better_b,
        sign_test_p(better_a, better_b), resamples, seed, level)


def compare_runs(a_runs: Sequence[Iterable[Episode]], b_runs: Sequence[Iterable[Episode]],
                 names: tuple[str, str] = ("A", "B"), **kw) -> PairedDiff:
    """``paired_difference`` of two policies' evaluation runs (``goal_means`` of each)."""
    for name, runs in zip(names, (a_runs, b_runs)):
        if not runs:
            raise PairedError(f"{name}: no evaluation runs")
    return paired_difference(goal_means(a_runs), goal_means(b_runs), names=names,
                             runs=(len(a_runs), len(b_runs)), **kw)
