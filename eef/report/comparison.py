"""The paired comparison of run directories (an ``eef compare`` output): per-goal differences
between methods, and the expert, on the evaluation goals; and how many failed expert
trajectories EEF found a solvable state in.

* **Paired differences** (``eef.report.paired``): each method's final-iteration evaluation
  episodes (``rollouts/eval/...``) and the expert's (``rollouts/eval/expert.jsonl``, the
  ``expert/eval`` stage of ``eef compare``), per goal averaged over the runs (seeds), A - B
  with 95% bootstrap intervals over task families (``eef.envs.task_family``: WebShop's goals
  of one product, ScienceWorld's variations of one task are resampled together; ``unit=
  "goal"`` resamples goals one by one).  Default pairs (``default_pairs``): every method
  against SFT, every method against RFT×N, EEF against the expert.
* **Solvable states in failed expert trajectories**: from EEF's ``labels/METHOD-itI.jsonl``
  (``LabelRecord``), per method and iteration and over all its iterations, the failed expert
  trajectories explored and those with at least one solvable simulated state (any state, and
  after s_0, i.e. not the task's start), pooled over runs.  A diverged state (its replays
  differed from the expert's record) does not count as solvable: it is not the expert's state.

``write_comparison(OUT)`` writes both to ``OUT/paired.json`` and ``OUT/paired.md``
(``eef compare`` calls it after its runs); the HTML report shows them too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from eef.envs.base import task_family
from eef.report.paired import (LEVEL, RESAMPLES, SEED, Episode, PairedDiff, PairedError,
                               compare_runs)
from eef.report.rundata import ReportError, Run, load_runs, method_order

EXPERT = "expert"
#: what the bootstrap resamples (whole task families, the default, or single goals) and the
#: words every view of a comparison says it with
UNITS = {"family": "task families (the goals of one family, e.g. one WebShop product or one "
                   "ScienceWorld task, resampled together)",
         "goal": "goals (one by one)"}


def check_unit(unit: str, what: str = "unit") -> str:
    """``unit`` if it is one of ``UNITS``, else a ``ReportError`` naming ``what`` was given."""
    if unit not in UNITS:
        raise ReportError(f"{what} {unit!r}: one of {', '.join(UNITS)}")
    return unit


NO_EXPERT_NOTE = ("no expert evaluation on the eval goals: the expert trajectories were "
                  "imported (no policy to run), or the runs predate the expert/eval stage "
                  "(rerun `eef compare` to add it)")


# -- episodes per method ---------------------------------------------------------------------
def _episodes(trajs) -> list[Episode]:
    return [(t.task_id, float(t.reward), bool(t.success)) for t in trajs]


def method_episodes(runs: Sequence[Run]) -> dict[str, list[list[Episode]]]:
    """Per method (and ``expert``, ``expert/J``): per run that evaluated it, its
    final-iteration evaluation episodes.  Methods in the paper's order, the expert last."""
    from eef.report.analysis import final_iteration
    out: dict[str, list[list[Episode]]] = {}
    for m in method_order({m for r in runs for m in r.methods}):
        for run in runs:
            row = final_iteration(run, m)
            if row is not None:
                out.setdefault(m, []).append(_episodes(run.eval_trajectories(row)))
    for run in runs:
        for row in run.expert_eval_rows:
            out.setdefault(str(row["method"]), []).append(_episodes(run.eval_trajectories(row)))
    return {m: [eps for eps in v if eps] for m, v in out.items() if any(v)}


def default_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """Every method against SFT, then against RFT×N, then EEF against each expert (each
    unordered pair once, in the first orientation met)."""
    names = list(names)
    methods = [m for m in names if not m.startswith(EXPERT)]
    pairs: list[tuple[str, str]] = []
    for ref in ("sft", "rft_xn"):
        if ref in methods:
            pairs += [(m, ref) for m in methods if m != ref]
    if "eef" in methods:
        pairs += [("eef", e) for e in names if e.startswith(EXPERT)]
    seen: set[frozenset[str]] = set()
    out = []
    for p in pairs:
        if frozenset(p) not in seen:
            seen.add(frozenset(p))
            out.append(p)
    return out


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``"eef-rft_xn,eef-expert"`` -> [("eef", "rft_xn"), ("eef", "expert")]; ``ReportError``
    (a ValueError) on a malformed item."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        a, sep, b = item.partition("-")
        if not sep or not a.strip() or not b.strip():
            raise ReportError(f"pair {item!r}: write A-B, e.g. eef-rft_xn")
        out.append((a.strip(), b.strip()))
    return out


# -- solvable states in failed expert trajectories -------------------------------------------
@dataclass
class SolvableRow:
    """Failed expert trajectories EEF explored (``iteration`` None: over all iterations, a
    trajectory counted once per run), and those with a solvable simulated state."""

    method: str
    iteration: int | None
    runs: int
    failed: int
    with_solvable: int            # at least one solvable state (s_0 included)
    with_solvable_after_s0: int   # at least one solvable state s_k, k > 0

    @property
    def share(self) -> float:
        return self.with_solvable / self.failed if self.failed else float("nan")

    @property
    def share_after_s0(self) -> float:
        return self.with_solvable_after_s0 / self.failed if self.failed else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": _finite(self.share),
                "share_after_s0": _finite(self.share_after_s0)}


def _finite(x: float) -> float | None:
    return None if x != x else x


def solvable_failures(runs: Sequence[Run]) -> list[SolvableRow]:
    """Per method and iteration, then over all its iterations: the failed expert trajectories
    of the label files and how many had a solvable state.  A record's ``expert_success`` of
    None (older files) counts as failed when the run explored failures only (the default,
    ``method.simulate_successful`` false)."""
    per: dict[tuple[str, int | None], SolvableRow] = {}
    for run in runs:
        only_failed = not (run.config.get("method") or {}).get("simulate_successful", False)
        overall: dict[str, dict[str, tuple[bool, bool]]] = {}
        for method, it, rel in run.label_files():
            row = per.setdefault((method, it), SolvableRow(method, it, 0, 0, 0, 0))
            row.runs += 1
            for i, rec in enumerate(run.label_records(rel)):
                if rec.expert_success or (rec.expert_success is None and not only_failed):
                    continue
                ok = [k for k, s, d in zip(rec.states, rec.solved, rec.diverged) if s and not d]
                any_, later = bool(ok), any(k > 0 for k in ok)
                row.failed += 1
                row.with_solvable += any_
                row.with_solvable_after_s0 += later
                key = rec.parent or f"{rec.task_id}#{i}"
                a, b = overall.setdefault(method, {}).get(key, (False, False))
                overall[method][key] = (a or any_, b or later)
        for method, trajs in overall.items():
            row = per.setdefault((method, None), SolvableRow(method, None, 0, 0, 0, 0))
            row.runs += 1
            row.failed += len(trajs)
            row.with_solvable += sum(a for a, _ in trajs.values())
            row.with_solvable_after_s0 += sum(b for _, b in trajs.values())
    ms = method_order({m for m, _ in per})
    return [per[k] for k in sorted(per, key=lambda k: (ms.index(k[0]), k[1] is None, k[1] or 0))]


# -- the comparison --------------------------------------------------------------------------
@dataclass
class Comparison:
    pairs: list[PairedDiff] = field(default_factory=list)
    solvable: list[SolvableRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unit: str = "family"   # what the bootstrap resampled (UNITS)

    @property
    def resampled(self) -> str:
        """What the bootstrap resampled, in words (``UNITS``)."""
        return UNITS[self.unit]

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": [p.to_dict() for p in self.pairs], "unit": self.unit,
                "solvable_failures": [r.to_dict() for r in self.solvable], "notes": self.notes}

    def pair_rows(self) -> list[dict[str, str]]:
        """The paired differences as display strings (win rate in percentage points)."""
        fam = self.unit == "family"
        return [{"A - B": f"{p.a} - {p.b}",
                 **({"goals (families)": f"{p.goals} ({p.clusters})"} if fam
                    else {"goals": str(p.goals)}),
                 "runs": f"{p.runs_a}/{p.runs_b}",
                 "win rate A / B (%)": f"{100 * p.win_rate_a:.1f} / {100 * p.win_rate_b:.1f}",
                 "win rate diff (pp)": _ci(100 * p.win_rate_diff, 100 * p.win_rate_lo,
                                           100 * p.win_rate_hi),
                 "score A / B": f"{p.score_a:.1f} / {p.score_b:.1f}",
                 "score diff": _ci(p.score_diff, p.score_lo, p.score_hi),
                 "A>B / B>A / tie": f"{p.a_better} / {p.b_better} / {p.ties}",
                 "sign p": f"{p.sign_p:.3g}"} for p in self.pairs]

    def solvable_rows(self) -> list[dict[str, str]]:
        return [{"method": r.method, "iteration": "all" if r.iteration is None else str(r.iteration),
                 "runs": str(r.runs), "failed expert trajectories": str(r.failed),
                 "with a solvable state": f"{r.with_solvable} ({_pct(r.share)})",
                 "with one after s0": f"{r.with_solvable_after_s0} ({_pct(r.share_after_s0)})"}
                for r in self.solvable]

    def markdown(self) -> str:
        n = self.pairs[0].resamples if self.pairs else RESAMPLES
        out = ["## Paired per-goal differences (final iteration, eval goals)", "",
               "A - B per goal, averaged over each side's runs; 95% percentile bootstrap "
               f"interval over {self.resampled} ({n:,} "
               "resamples, fixed seed); goals where A scored more / less / the same; two-sided "
               "sign test over goals.", ""]
        out += _md_table(self.pair_rows()) if self.pairs else ["(no pair to compare)"]
        out += ["", "## Failed expert trajectories with a solvable state (EEF labels)", ""]
        out += _md_table(self.solvable_rows()) if self.solvable else ["(no EEF labels)"]
        if self.notes:
            out += ["", "Notes:", ""] + [f"* {n}" for n in self.notes]
        return "\n".join(out) + "\n"


def _ci(x: float, lo: float, hi: float) -> str:
    return f"{x:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.1f}%"


def _md_table(rows: list[dict[str, str]]) -> list[str]:
    head = list(rows[0])
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(r[h] for h in head) + " |" for r in rows])


def comparison(runs: Sequence[Run], pairs: Sequence[tuple[str, str]] | None = None, *,
               resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL,
               unit: str = "family") -> Comparison:
    """The paired differences (``pairs``, default ``default_pairs``) and the solvable-state
    shares of the runs; ``unit``: what the bootstrap resamples (``UNITS``).  A pair naming a
    policy the runs did not evaluate is left out with a note (so is the expert when no run
    evaluated it)."""
    check_unit(unit)
    groups = task_family if unit == "family" else None
    eps = method_episodes(runs)
    notes: list[str] = []
    if not any(m.startswith(EXPERT) for m in eps):
        notes.append(NO_EXPERT_NOTE)
    wanted = list(pairs) if pairs is not None else default_pairs(eps)
    out = []
    for a, b in wanted:
        missing = [x for x in (a, b) if x not in eps]
        if missing:
            if pairs is not None or not all(x.startswith(EXPERT) for x in missing):
                notes.append(f"{a} - {b}: no evaluation of {', '.join(missing)} in these runs")
            continue
        try:
            p = compare_runs(eps[a], eps[b], (a, b), resamples=resamples, seed=seed, level=level,
                             groups=groups)
        except PairedError as e:
            notes.append(f"{a} - {b}: {e}")
            continue
        if p.note:
            notes.append(p.note)
        out.append(p)
    return Comparison(out, solvable_failures(runs), notes, unit)


def write_comparison(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                     pairs: Sequence[tuple[str, str]] | None = None, unit: str = "family"
                     ) -> Comparison:
    """``comparison`` of the run directories ``paths`` (a compare output directory expands to
    its runs) written to ``OUT/paired.json`` and ``OUT/paired.md``."""
    c = comparison(load_runs(paths), pairs, unit=unit)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paired.json").write_text(json.dumps(c.to_dict(), indent=1))
    (out / "paired.md").write_text(c.markdown())
    return c
