"""``eef report``: one self-contained HTML file that a person can read.

    build_report([RUN_DIR, ...], Path("report.html"))

Views (docs/report.md): the summary table; win rate and mean score per iteration per method
(mean ± std over the run directories of a method: its seeds); win rate against the counted
budget (env steps, generated tokens); the expert against the trained agents; a per-task-category
breakdown; Figure 2 of Lan et al. 2025 (navigation skills in successful WebShop episodes,
training samples from recovery states); the Figure 1 browser (every explored expert
trajectory's simulated states, action labels and the agent's continuations, searchable by task
id, paginated); each run's config.

The page needs no network: plots are PNG data URIs, the style and the script are inline, and a
Content-Security-Policy forbids loading anything else.  Text from the runs is HTML-escaped; the
Figure 1 data is embedded as JSON with ``<``, ``>`` and ``&`` escaped and rendered through
``textContent``.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from eef.report import analysis as A
from eef.report import plots
from eef.report.assets import CSS, JS
from eef.report.comparison import Comparison, check_unit, comparison
from eef.report.figure1 import figure1_entries
from eef.report.rundata import ReportError, Run, TaskCategories, load_runs


@dataclass
class ReportConfig:
    """Options of ``build_report``."""

    title: str = field(default="EEF report", metadata={"help": "Page title."})
    obs_chars: int = field(default=300, metadata={
        "help": "Observations in the Figure 1 browser are clipped to this many characters "
                "(0: never); keeps reports of thousands of trajectories small."})
    max_sims_per_state: int = field(default=8, metadata={
        "help": "Continuations shown per simulated state (the rest are counted)."})
    page_size: int = field(default=50, metadata={"help": "Figure 1 entries per page."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Data dir for WebShop product categories (default: the run's env.options."
                "data_dir, else EEF_DATA_DIR, else the data dir the run recorded, else the "
                "default data dir)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    pairs: list[tuple[str, str]] | None = field(default=None, metadata={
        "help": "Paired differences A - B to show (default: every method vs sft and vs rft_xn, "
                "eef vs the expert; eef.report.comparison.default_pairs)."})
    resample: str = field(default="family", metadata={
        "help": "What the paired differences' bootstrap resamples: 'family' (the goals of one "
                "task family, e.g. one WebShop product, together; eef.envs.task_family) or "
                "'goal' (goals one by one, narrower when a family's goals go together)."})

    def __post_init__(self) -> None:
        if self.obs_chars < 0 or self.max_sims_per_state < 0 or self.page_size < 1:
            raise ReportError("obs_chars and max_sims_per_state must be >= 0, page_size >= 1")
        check_unit(self.resample, "resample")


# -- formatting helpers -----------------------------------------------------------------------
def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def pct(x: float, std: float | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    s = f"{100 * x:.1f}"
    return s if std is None else f"{s} ± {100 * std:.1f}"


def num(x: float | None, std: float | None = None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    s = f"{x:,.{digits}f}"
    return s if std is None else f"{s} ± {std:,.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1,
          cls: str = "") -> str:
    """An HTML table; every cell is escaped; the first ``left`` columns are left-aligned."""
    h = "".join(f"<th class='{'l' if i < left else ''}'>{esc(c)}</th>" for i, c in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class='{'l' if i < left else ''}'>{esc(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table class='{esc(cls)}'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def img(uri: str, alt: str) -> str:
    return f"<img class='plot' alt='{esc(alt)}' src='{uri}'>"


def json_script(obj: Any, elem_id: str, **attrs: Any) -> str:
    """JSON in a ``<script type="application/json">``; ``<``, ``>``, ``&`` escaped so no text can
    close the element or open markup."""
    text = (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    extra = "".join(f" {k.replace('_', '-')}='{esc(v)}'" for k, v in attrs.items())
    return f"<script type='application/json' id='{esc(elem_id)}'{extra}>{text}</script>"


# -- sections ---------------------------------------------------------------------------------
def _expert_eval_rows(runs: list[Run]) -> list[tuple[Any, ...]]:
    """(who, split, runs, episodes, win rate, mean score) of the expert evaluated on the eval
    tasks (``expert/eval`` rows), mean ± std over runs."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        for row in r.expert_eval_rows:
            by.setdefault(str(row["method"]), []).append(row)
    out = []
    for m, rows in by.items():
        wr, wr_s = A.mean_std([float(r["win_rate"]) for r in rows])
        sc, sc_s = A.mean_std([float(r["mean_score"]) for r in rows])
        out.append((m, "/".join(sorted({str(r.get("split")) for r in rows})), len(rows),
                    sum(r["n"] for r in rows), pct(wr, wr_s), num(sc, sc_s)))
    return out


def _summary(runs: list[Run], curves: dict[str, list[A.CurvePoint]],
             expert: A.ExpertSummary | None) -> str:
    rows = []
    if expert:
        rows.append(("expert (train)", expert.split, expert.runs, expert.episodes,
                     pct(expert.win_rate, expert.win_rate_std),
                     num(expert.mean_score, expert.mean_score_std), "–"))
    rows += [(*r, "–") for r in _expert_eval_rows(runs)]
    for m, pts in curves.items():
        last = max(pts, key=lambda p: p.iteration)
        rows.append((m, _final_split(runs, m), last.runs, last.episodes, pct(last.win_rate, last.win_rate_std),
                     num(last.mean_score, last.mean_score_std), last.iteration))
    head = ("method", "split", "runs", "episodes", "win rate (%)", "mean score", "iteration")
    return ("<h2 id='summary'>Summary</h2><p class='small muted'>Final iteration of each method, "
            "mean ± std over its runs (seeds). The expert (train): on the training tasks it "
            "was collected on; the expert evaluated on the evaluation split (<code>eef "
            "compare</code>), when there, and the methods: on the evaluation split.</p>"
            + table(head, rows))


def _paired_section(c: Comparison) -> str:
    out = ["<h2 id='paired'>Paired per-goal differences</h2>",
           "<p class='small muted'>A − B on the evaluation goals both were evaluated on: each "
           "method's final iteration and the expert's evaluation, per goal averaged over the "
           "runs (seeds), then the mean over goals with a 95% percentile bootstrap interval "
           f"(over {esc(c.resampled)}, fixed seed); win rate in percentage points, score in points "
           "(0-100); goals where A scored more / less / the same, and the two-sided sign test "
           "over the untied goals.</p>"]
    if c.pairs:
        rows = c.pair_rows()
        out.append(table(list(rows[0]), [list(r.values()) for r in rows]))
    else:
        out.append("<p class='muted'>No pair of evaluated policies to compare.</p>")
    out.append("<h3>Failed expert trajectories with a solvable state</h3>")
    if c.solvable:
        out.append("<p class='small muted'>From EEF's labels (<code>labels/METHOD-itI.jsonl"
                   "</code>), pooled over runs: the failed expert trajectories explored and those "
                   "with at least one solvable simulated state (a diverged state does not count); "
                   "‘after s0’ leaves the start state out; ‘all’: a trajectory counted once per "
                   "run over every iteration.</p>")
        rows = c.solvable_rows()
        out.append(table(list(rows[0]), [list(r.values()) for r in rows], left=2))
    else:
        out.append("<p class='muted'>No EEF labels in these runs.</p>")
    if c.notes:
        out.append("<ul class='small'>" + "".join(f"<li>{esc(n)}</li>" for n in c.notes)
                   + "</ul>")
    return "".join(out)


#: the budget columns of the iterations table: (BUDGET_KEYS key, header)
_BUDGET_COLUMNS = (("episodes", "rollout episodes"), ("env_steps", "policy env steps"),
                   ("replay_steps", "replayed expert steps"),
                   ("generated_tokens", "generated tokens"),
                   ("prompt_tokens", "prompt tokens"),
                   ("prefill_tokens", "prompt tokens after prefix reuse"))


def _curves_section(curves: dict[str, list[A.CurvePoint]]) -> str:
    rows = [(m, p.iteration, p.runs, p.episodes, pct(p.win_rate, p.win_rate_std),
             num(p.mean_score, p.mean_score_std),
             *(num(p.budget.get(k), digits=0) for k, _ in _BUDGET_COLUMNS))
            for m, pts in curves.items() for p in pts]
    head = ("method", "iteration", "runs", "eval episodes", "win rate (%)", "mean score",
            *(f"{h} (cum.)" for _, h in _BUDGET_COLUMNS))
    out = ["<h2 id='iterations'>Win rate and score per iteration</h2>",
           "<p class='small muted'>Iteration 0 is the SFT model every iterative method starts "
           "from (SFT-all's is its own model). Shaded: "
           "± one standard deviation over runs. Budget of the method's training rollouts and "
           "simulations, summed up to the iteration (metrics rows <code>METHOD/itI/budget</code>): "
           "episodes, policy env steps, the expert steps replayed before a simulation, generated "
           "tokens, and the prompt tokens of every turn before and after prefix reuse (0: the "
           "policy did not report them).</p>"]
    if curves:
        out.append(img(plots.plot_curves(curves), "win rate and mean score per iteration"))
    out.append(table(head, rows, left=1))
    out.append("<h2 id='budget'>Budget against win rate</h2>")
    if any(p.env_steps is not None and p.iteration > 0 for pts in curves.values() for p in pts):
        out.append(img(plots.plot_budget(curves), "win rate against env steps and generated tokens"))
    else:
        out.append("<p class='muted'>No budget rows in these runs.</p>")
    return "".join(out)


def _final_split(runs: list[Run], method: str) -> str:
    return "/".join(sorted({str(r.get("split")) for run in runs
                            for r in [A.final_iteration(run, method)] if r}))


def _expert_section(runs: list[Run], expert: A.ExpertSummary | None, curves,
                    train_rows: list[A.TrainTaskRow]) -> str:
    out = ["<h2 id='expert'>The expert and the trained agents</h2>"]
    rows = []
    if expert:
        rows.append(("expert (train)", expert.split, pct(expert.win_rate, expert.win_rate_std),
                     num(expert.mean_score, expert.mean_score_std)))
    rows += [(who, split, wr, sc) for who, split, _, _, wr, sc in _expert_eval_rows(runs)]
    for m, pts in curves.items():
        last = max(pts, key=lambda p: p.iteration)
        rows.append((f"{m} (iteration {last.iteration})", _final_split(runs, m),
                     pct(last.win_rate, last.win_rate_std), num(last.mean_score, last.mean_score_std)))
    out.append(table(("who", "split", "win rate (%)", "mean score"), rows))
    if train_rows:
        out.append("<p class='small muted'>On the same training tasks: tasks the agent solved in "
                   "its start-state rollouts of each iteration (at least one success), next to "
                   "the expert, pooled over runs.</p>")
        out.append(table(("method", "iteration", "tasks", "agent solved (%)", "expert solved (%)",
                          "solved where the expert failed"),
                         [(r.method, r.iteration, r.tasks, pct(r.solved / r.tasks if r.tasks else math.nan),
                           pct(r.expert_solved / r.tasks if r.tasks else math.nan),
                           r.solved_expert_failed) for r in train_rows]))
    return "".join(out)


def _training_section(runs: list[Run]) -> str:
    out = ["<h2 id='training'>Training</h2>"]
    rows = []
    for run in runs:
        for r in run.train_rows:
            d = r.get("decisions") or {}
            secs = r.get("seconds")
            same = r.get("same_as")
            rows.append((run.name, str(r["stage"])[len("train/"):],
                         r.get("examples", "–"), r.get("steps", "–"),
                         num(secs / 60 if _is_num(secs) else None),
                         pct(_frac(d.get("first_turn_argmax"))),
                         num(_frac(d.get("first_turn_p")), digits=2),
                         pct(_frac(d.get("later_argmax"))),
                         num(_frac(d.get("later_p")), digits=2),
                         _same_note(same)))
    if not rows:
        out.append("<p class='muted'>No training records in these runs.</p>")
        return "".join(out)
    out.append("<p class='small muted'>Every model the runs trained. Decision probe "
               "(docs/models.md, \"Loss mask\"): on the model's first training trajectories, the "
               "share of turns whose decision token (the thought's first word) is the model's "
               "argmax, and its mean probability, for the first turn and for later ones. The "
               "mean loss hides a wrong decision under well-copied words: a low first-turn "
               "share flags a model that will not start its episodes as its data does. "
               "– : not recorded (runs before the probe, or <code>decision_probe: 0</code>).</p>")
    out.append(table(("run", "model", "trajectories", "steps", "minutes",
                      "first turn: argmax (%)", "first turn: P", "later: argmax (%)",
                      "later: P", "note"), rows, left=2))
    return "".join(out)


def _same_note(same: Any) -> str:
    if same == "init":
        return "nothing to train on: its init model as is"
    if same == "given":
        return "not trained here: the given model (method.sft_model)"
    return f"same training as {same}: its model" if isinstance(same, str) and same else ""


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _frac(x: Any) -> float | None:
    """A recorded share or probability, or None when it is not a number in [0, 1]."""
    return float(x) if _is_num(x) and 0 <= x <= 1 else None


def _category_section(runs: list[Run], cats: TaskCategories) -> str:
    names, cols, tab = A.category_breakdown(runs, cats)
    out = ["<h2 id='categories'>Per task category</h2>",
           "<p class='small muted'>WebShop: the product category of the task's target product; "
           "ScienceWorld: the task type. Expert: its episodes on the training tasks; methods: "
           "their final-iteration evaluation episodes, pooled over runs. Cells: wins / episodes "
           "(win rate %).</p>"]
    if cats.note:
        out.append(f"<p class='warn small'>{esc(cats.note)}</p>")
    if not names:
        return "".join(out) + "<p class='muted'>No episodes.</p>"
    out.append(img(plots.plot_categories(names, cols, tab), "win rate per task category"))
    rows = []
    for c in names:
        rows.append([c] + [(f"{tab[c][k].wins}/{tab[c][k].n} ({pct(tab[c][k].win_rate)})"
                            if k in tab[c] else "–") for k in cols])
    out.append(table(["category"] + cols, rows))
    return "".join(out)


def _figure2_section(nav: list[A.NavigationRow], origins: list[A.OriginRow]) -> str:
    out = ["<h2 id='figure2'>Figure 2: navigation skills and recovery states</h2>",
           "<h3>Successful episodes that use navigation skills</h3>"]
    if nav:
        out.append("<p class='small muted'>WebShop navigation actions: <code>click[next &gt;]"
                   "</code>, <code>click[&lt; prev]</code>, <code>click[back to search]</code>. "
                   "Methods: successful final-iteration evaluation episodes; expert: its "
                   "successes on the training tasks.</p>")
        if any(r.successes for r in nav):
            out.append(img(plots.plot_navigation(nav), "share of successes using navigation"))
        out.append(table(("who", "successes", "with navigation", "share (%)", "next >", "< prev",
                          "back to search"),
                         [(r.who, r.successes, r.with_navigation, pct(r.share),
                           r.per_skill["next >"], r.per_skill["< prev"],
                           r.per_skill["back to search"]) for r in nav]))
    else:
        out.append("<p class='muted'>Not applicable: no WebShop runs.</p>")
    out.append("<h3>Training samples from recovery states</h3>")
    if origins:
        out.append("<p class='small muted'>Each iteration's training set by origin (summed over "
                   "runs). Recovery share: EEF samples whose important state is a recovery state, "
                   "among the agent-generated samples (start-state rollouts and EEF samples).</p>")
        out.append(img(plots.plot_origins(origins), "training samples by origin"))
        out.append(table(("method", "iteration", "runs", *A.ORIGINS, "recovery share (%)"),
                         [(r.method, r.iteration, r.runs, *(r.counts[o] for o in A.ORIGINS),
                           pct(r.recovery_share)) for r in origins]))
    else:
        out.append("<p class='muted'>No training sets (<code>data/</code>) in these runs.</p>")
    return "".join(out)


def _figure1_section(entries: list[dict[str, Any]], cfg: ReportConfig) -> str:
    groups = sorted({(e["run"], e["method"], e["it"]) for e in entries},
                    key=lambda g: (g[0], g[1], g[2]))
    opts = "".join(f"<option value='{esc(f'{r}|{m}|{i}')}'>{esc(f'{r} · {m} iteration {i}')}</option>"
                   for r, m, i in groups)
    legend = ("<p class='legend small'>States: <span class='chip st solved'>solved</span>"
              "<span class='chip st unsolved'>unsolved</span><span class='chip st diverged'>"
              "diverged</span><span class='chip st unsolved important'>important</span> "
              "(★ recovery state). Expert actions: <span class='chip act beneficial'>beneficial"
              "</span><span class='chip act harmful'>harmful (masked)</span><span class='chip act "
              "neutral'>neutral</span><span class='chip act unused'>unused</span>. Click a state "
              "to open the agent's continuations from it.</p>")
    return ("<h2 id='figure1'>Figure 1: explored expert trajectories</h2>"
            "<p class='small muted'>Every expert trajectory EEF explored, per run and iteration: "
            "the agent was simulated from s<sub>0</sub>, s<sub>l</sub>, …, s<sub>Ml</sub> "
            "(l = ⌊|τ|/(M+1)⌋); a state is solved when a continuation succeeded, diverged when "
            "every replay of the expert prefix differed from the record. Actions from an unsolved "
            "to a solved state are beneficial, from a solved to an unsolved one harmful; actions "
            f"after the last simulated state are unused. Observations clipped to {cfg.obs_chars} "
            "characters.</p>" + legend +
            "<div id='fig1-controls'><input id='fig1-search' type='search' "
            "placeholder='filter by task id' aria-label='filter by task id'> "
            f"<select id='fig1-group' aria-label='run and iteration'><option value=''>all runs "
            f"and iterations</option>{opts}</select> "
            "<button id='fig1-prev' type='button'>‹ prev</button><span id='fig1-page'></span>"
            "<button id='fig1-next' type='button'>next ›</button> <span id='fig1-count' "
            "class='muted small'></span></div><div id='fig1-list'>"
            + ("" if entries else "<p class='muted'>No EEF labels (<code>labels/*.jsonl</code>) "
               "in these runs.</p>") + "</div>"
            + json_script(entries, "fig1-data", data_page_size=cfg.page_size))


def _config_section(runs: list[Run]) -> str:
    out = ["<h2 id='configs'>Configs</h2>"]
    flat = [_flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f})
    diff = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str)
                                    for f in flat}) > 1]
    if len(runs) > 1:
        if diff:
            out.append("<p class='small'>Keys that differ between runs:</p>")
            out.append(table(["key"] + [r.name for r in runs],
                             [[k] + [json.dumps(f.get(k), default=str) for f in flat] for k in diff]))
        else:
            out.append("<p class='small'>All runs have the same config.</p>")
    for r in runs:
        out.append(f"<details><summary>{esc(r.name)} — <code>{esc(r.path)}</code></summary>"
                   f"<pre>{esc(r.config_text or '(no config.yaml)')}</pre></details>")
    return "".join(out)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


# -- the page ---------------------------------------------------------------------------------
def _run_data_dir(runs: list[Run]) -> str | None:
    """The runs' data dir: a config's ``env.options.data_dir``, else (with no ``EEF_DATA_DIR``)
    the one a run recorded (``eef.paths.record_data_dir``)."""
    for r in runs:
        if d := ((r.config.get("env") or {}).get("options") or {}).get("data_dir"):
            return str(d)
    if os.environ.get("EEF_DATA_DIR"):
        return None
    from eef.paths import recorded_data_dir
    return next((str(d) for r in runs if (d := recorded_data_dir(r.path))), None)


def render_report(runs: list[Run], cfg: ReportConfig | None = None, progress=None) -> str:
    """The report page of already-loaded runs (``progress(step_name)`` is called per view)."""
    cfg = cfg or ReportConfig()
    tick = progress or (lambda _name: None)
    data_dir = cfg.data_dir or _run_data_dir(runs)
    tick("metrics")
    curves = A.curves(runs)
    expert = A.expert_summary(runs)
    tick("tables and plots")
    parts = [_summary(runs, curves, expert), _curves_section(curves),
             _expert_section(runs, expert, curves, A.train_task_comparison(runs))]
    parts.append(_training_section(runs))
    tick("paired differences")
    parts.append(_paired_section(comparison(runs, cfg.pairs, unit=cfg.resample)))
    tick("task categories")
    parts.append(_category_section(runs, TaskCategories(data_dir)))
    tick("figure 2")
    parts.append(_figure2_section(A.navigation_shares(runs), A.sample_origins(runs)))
    tick("figure 1")
    entries = figure1_entries(runs, cfg.obs_chars, cfg.max_sims_per_state)
    parts.append(_figure1_section(entries, cfg))
    parts.append(_config_section(runs))
    warns = [w for r in runs for w in r.warnings]
    warn_html = ""
    if warns:
        items = "".join(f"<li>{esc(w)}</li>" for w in warns[:200])
        more = f"<li>… {len(warns) - 200} more</li>" if len(warns) > 200 else ""
        warn_html = (f"<div class='warn' id='warnings'><b>{len(warns)} input problem(s) skipped"
                     f"</b><ul class='small'>{items}{more}</ul></div>")
    envs = sorted({r.env for r in runs})
    toc = "".join(f"<a href='#{a}'>{esc(b)}</a>" for a, b in (
        ("summary", "summary"), ("iterations", "iterations"), ("budget", "budget"),
        ("expert", "expert vs agents"), ("training", "training"),
        ("paired", "paired differences"),
        ("categories", "categories"), ("figure2", "Figure 2"),
        ("figure1", "Figure 1"), ("configs", "configs")))
    run_list = "".join(f"<li><code>{esc(r.name)}</code> — {esc(', '.join(r.methods) or 'no evaluations')}"
                       f"</li>" for r in runs)
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
           "script-src 'unsafe-inline'")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(cfg.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(cfg.title)}</h1><p class='small'>{len(runs)} run(s) on "
            f"{esc(', '.join(envs))}:</p><ul class='small'>{run_list}</ul>"
            f"<nav class='toc small'>{toc}</nav>{warn_html}{''.join(parts)}"
            f"<script>{JS}</script></body></html>")


def build_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                 config: ReportConfig | None = None) -> Path:
    """Write ONE self-contained HTML report of the given run directories to ``out``.

    ``run_dirs``: run directories of ``eef run`` or ``eef compare`` (a compare output directory
    expands to its per-seed run directories).  Runs evaluating the same method are aggregated
    (mean ± std).  Raises ``NotARunDirError`` (a ``ReportError``) for a path that is no run
    directory; malformed lines are skipped with a ``ReportWarning`` and listed in the report.
    The file is written atomically (a temporary file renamed), so a killed build leaves no
    half-written report.  Returns the path written.
    """
    cfg = config or ReportConfig()
    out = Path(out)
    if out.exists() and out.is_dir():
        raise ReportError(f"{out}: is a directory; give the report's file name (report.html)")
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    from eef.progress import Progress
    steps = ["load", "metrics", "tables and plots", "paired differences", "task categories",
             "figure 2", "figure 1", "write"]
    with Progress(TextColumn("[bold]report[/] {task.description}"), BarColumn(),
                  TimeElapsedColumn(), disable=not cfg.progress, transient=True) as bar:
        task = bar.add_task("load", total=len(steps))

        def tick(name: str) -> None:
            bar.update(task, advance=1, description=name)

        runs = load_runs(run_dirs)
        text = render_report(runs, cfg, tick)
        tick("write")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
        bar.update(task, completed=len(steps))
    return out


def report_command(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
                   config: ReportConfig | None = None, console=None) -> Path:
    """What ``eef report RUN_DIR [RUN_DIR ...] --out report.html`` runs: ``build_report`` with
    the skipped-input warnings printed as one short list (not Python warning lines) and the
    path written.  Raises ``ReportError`` (the command prints it and exits with status 2)."""
    import warnings

    from rich.console import Console

    from eef.report.rundata import ReportWarning
    console = console or Console(stderr=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        path = build_report(run_dirs, out, config)
    for w in caught:  # others pass through unchanged
        if not issubclass(w.category, ReportWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    msgs = list(dict.fromkeys(str(w.message) for w in caught
                              if issubclass(w.category, ReportWarning)))
    if msgs:
        console.print(f"[yellow]{len(msgs)} input problem(s) skipped[/] (listed in the report):",
                      highlight=False)
        for m in msgs[:10]:
            console.print(f"  {m}", markup=False, highlight=False)
        if len(msgs) > 10:
            console.print(f"  … {len(msgs) - 10} more", highlight=False)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
    return path
