"""The HTML report (eef.report.html): numbers against the run directory's files, Figure 1 against
EEF's labels, escaping of trajectory text, bad input.  Hand-built run directories come from
tests/report_fakes.py; one real (tiny) pipeline run is made once for the module."""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fakes import EVIL, write_fake_run  # noqa: E402
from test_models_util import TINY  # noqa: E402

from eef.report.analysis import ORIGINS, sample_origin  # noqa: E402
from eef.report.html import ReportConfig, build_report  # noqa: E402
from eef.report.rundata import (NotARunDirError, ReportError, ReportWarning,  # noqa: E402
                                TaskCategories, load_runs, navigation_skill)
from eef.trajectory import read_jsonl  # noqa: E402

QUIET = ReportConfig(progress=False)


# -- helpers ----------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts (headers included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> list[list[list[str]]]:
    p = _Tables()
    p.feed(html)
    return p.tables


def find_table(html: str, *head: str) -> list[dict[str, str]]:
    for t in tables(html):
        if t and tuple(t[0][: len(head)]) == head:
            return [dict(zip(t[0], r)) for r in t[1:]]
    raise AssertionError(f"no table with header {head}")


def fig1_data(html: str) -> list[dict]:
    start = html.index("id='fig1-data'")
    start = html.index(">", start) + 1
    def no_constants(c):
        raise AssertionError(f"{c} is not JSON: JSON.parse would fail")
    return json.loads(html[start: html.index("</script>", start)], parse_constant=no_constants)


def metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


def pct(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def _ids():
    train = [f"webshop/B0FAKE{i:04d}/0" for i in range(24)]
    test = [f"webshop/B0TEST{i:04d}/{i % 3}" for i in range(18)]
    return train, test


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Three seeds of a compare output dir (sft, rft, eef), and their report."""
    root = tmp_path_factory.mktemp("fake") / "compare"
    train, test = _ids()
    for s in range(3):
        write_fake_run(root / f"seed{s}", train, test, seed=s, iterations=2, M=2, S=2)
    out = build_report([root], root.parent / "report.html", QUIET)
    return root, out.read_text(encoding="utf-8")


# -- numbers ----------------------------------------------------------------------------------
def test_iteration_table_matches_metrics(fake):
    root, html = fake
    rows = find_table(html, "method", "iteration", "runs")
    runs = [metrics(root / f"seed{s}") for s in range(3)]
    got = {(r["method"], int(r["iteration"])): r for r in rows}
    for m in ("sft", "rft", "eef"):
        its = sorted({r["iteration"] for ms in runs for r in ms
                      if r["stage"].startswith("eval/") and r["method"] == m})
        if m != "sft":
            its = [0] + its  # iteration 0 is the SFT model every method starts from
        for it in its:
            name = "sft" if it == 0 else m
            wr = [r["win_rate"] for ms in runs for r in ms
                  if r["stage"].startswith("eval/") and r["method"] == name and r["iteration"] == it]
            sc = [r["mean_score"] for ms in runs for r in ms
                  if r["stage"].startswith("eval/") and r["method"] == name and r["iteration"] == it]
            row = got[(m, it)]
            assert row["runs"] == "3"
            assert row["win rate (%)"] == pct(statistics.mean(wr), statistics.stdev(wr))
            assert row["mean score"] == f"{statistics.mean(sc):,.1f} ± {statistics.stdev(sc):,.1f}"
            if it > 0:  # every budget column
                for key, head in (("env_steps", "policy env steps"),
                                  ("replay_steps", "replayed expert steps"),
                                  ("episodes", "rollout episodes"),
                                  ("generated_tokens", "generated tokens"),
                                  ("prompt_tokens", "prompt tokens"),
                                  ("prefill_tokens", "prompt tokens after prefix reuse")):
                    xs = [r["budget"][key] for ms in runs for r in ms
                          if r["stage"] == f"{m}/it{it}/budget"]
                    assert row[f"{head} (cum.)"] == f"{statistics.mean(xs):,.0f}"


def test_summary_is_the_final_iteration_and_the_expert(fake):
    root, html = fake
    rows = {r["method"]: r for r in find_table(html, "method", "split", "runs", "episodes")}
    runs = [metrics(root / f"seed{s}") for s in range(3)]
    ex = [r["win_rate"] for ms in runs for r in ms if r["stage"] == "expert"]
    assert rows["expert (train)"]["win rate (%)"] == pct(statistics.mean(ex), statistics.stdev(ex))
    fin = [r["win_rate"] for ms in runs for r in ms if r["stage"] == "eval/eef/it2"]
    assert rows["eef"]["win rate (%)"] == pct(statistics.mean(fin), statistics.stdev(fin))
    assert rows["eef"]["iteration"] == "2" and rows["eef"]["episodes"] == str(3 * 18)


def test_navigation_and_sample_origins_match_the_files(fake):
    root, html = fake
    nav = {r["who"]: r for r in find_table(html, "who", "successes", "with navigation")}
    wins = [t for s in range(3) for t in read_jsonl(root / f"seed{s}/rollouts/eval/eef/it2.jsonl")
            if t.success]
    used = [t for t in wins if any(navigation_skill(a) for a in t.actions)]
    assert nav["eef"]["successes"] == str(len(wins)) and nav["eef"]["with navigation"] == str(len(used))
    assert 0 < len(used) < len(wins)  # the fake data exercises both cases
    back = sum(any(a == "click[back to search]" for a in t.actions) for t in wins)
    assert nav["eef"]["back to search"] == str(back)

    origins = {(r["method"], r["iteration"]): r for r in find_table(html, "method", "iteration", "runs", *ORIGINS)}
    data = [t for s in range(3) for t in read_jsonl(root / f"seed{s}/data/eef/it2.jsonl")]
    counts = {o: sum(sample_origin(t) == o for t in data) for o in ORIGINS}
    row = origins[("eef", "2")]
    assert {o: int(row[o]) for o in ORIGINS} == counts
    rec = sum(bool(t.meta.get("recovery")) for t in data if t.source.kind == "eef")
    assert counts["EEF from recovery state"] == rec
    assert rec > 0
    agent = len(data) - counts["expert"]
    assert row["recovery share (%)"] == f"{100 * rec / agent:.1f}"


def test_navigation_skill_strings():
    assert navigation_skill("click[Next >]") == "next >"
    assert navigation_skill(" click[< prev] ") == "< prev"
    assert navigation_skill("click[back to search]") == "back to search"
    assert navigation_skill("click[buy now]") is None
    assert navigation_skill("search[next >]") is None
    # the env's own constants (eef.envs.webshop.env) are what is matched
    from eef.envs.webshop.env import BACK_TO_SEARCH, NEXT_PAGE, PREV_PAGE
    for c in (BACK_TO_SEARCH, NEXT_PAGE, PREV_PAGE):
        assert navigation_skill(f"click[{c}]") == c


# -- Figure 1 ---------------------------------------------------------------------------------
def test_figure1_entries_match_the_labels(fake):
    root, html = fake
    entries = fig1_data(html)
    by = {(e["run"], e["it"], e["parent"]): e for e in entries}
    n = 0
    for s in range(3):
        sims = {}
        for i in (1, 2):
            for t in read_jsonl(root / f"seed{s}/rollouts/eef/it{i}/sim.jsonl"):
                sims.setdefault((i, t.source.parent, t.source.start_state), []).append(t)
            for line in (root / f"seed{s}/labels/eef-it{i}.jsonl").read_text().splitlines():
                rec = json.loads(line)
                e = by[(f"seed{s}", i, rec["parent"])]
                n += 1
                assert e["task"] == rec["task_id"] and e["samples"] == rec["samples"]
                assert [st["k"] for st in e["states"]] == rec["states"]
                for st, solved, div in zip(e["states"], rec["solved"], rec["diverged"]):
                    assert st["status"] == ("diverged" if div else "solved" if solved else "unsolved")
                    assert st["important"] == (st["k"] in rec["important"])
                    assert st["recovery"] == (st["k"] in rec["important"] and st["k"] > 0)
                    if st["k"] > 0:
                        got = sims[(i, rec["parent"], st["k"])]
                        assert [x["success"] for x in st["sims"]] == [t.success for t in got]
                        assert solved == any(x["success"] for x in st["sims"])
                        # the continuation is the agent's part only (after the expert prefix)
                        assert [x["a"] for x in st["sims"][0]["steps"]] == got[0].actions[st["k"]:]
                assert [x["l"] for x in e["expert"]["steps"]] == rec["labels"]
                for x in (x for st in e["states"] for x in st["sims"] if x["used"]):
                    assert x["success"]
    assert n == len(entries) and n > 20
    labels = {x["l"] for e in entries for x in e["expert"]["steps"]}
    statuses = {st["status"] for e in entries for st in e["states"]}
    assert {"beneficial", "harmful", "neutral", "unused"} <= labels  # every kind is exercised
    assert statuses == {"solved", "unsolved", "diverged"}
    assert any(x["used"] for e in entries for st in e["states"] for x in st["sims"])


def test_figure1_clips_observations(tmp_path):
    train, test = _ids()
    write_fake_run(tmp_path / "r", train[:6], test[:3], seed=1, methods=("eef",), iterations=1)
    out = build_report([tmp_path / "r"], tmp_path / "a.html", ReportConfig(obs_chars=40, progress=False))
    for e in fig1_data(out.read_text()):
        for s in e["expert"]["steps"]:
            assert len(s["o"]) <= 40 + len(" … (99999 more characters)")


# -- escaping and self-containment ------------------------------------------------------------
def test_trajectory_text_is_escaped(fake):
    _, html = fake
    assert "<img src=x" not in html and "onerror=window.__pwned=1>" not in html
    assert html.count("<script") == 2  # the Figure 1 data and the page script, nothing injected
    assert html.count("</script>") == 2
    # escaped, not dropped: in the page's HTML (the configs) and in the Figure 1 JSON
    assert "&lt;script&gt;window.__pwned=&#x27;script&#x27;&lt;/script&gt;" in html
    assert "\\u003cscript\\u003ewindow.__pwned='script'\\u003c/script\\u003e" in html
    # the data round-trips exactly (no loss): instructions keep the raw text
    assert any(EVIL in e["instruction"] for e in fig1_data(html))


def test_page_is_self_contained(fake):
    _, html = fake
    for bad in ("http://", "https://", "src='//", "@import", "url("):
        assert bad not in html, bad
    import re
    srcs = re.findall(r"<img class='plot' alt='[^']*' src='([^']+)'", html)
    assert len(srcs) >= 5
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_configs_are_shown_with_their_differences(fake):
    root, html = fake
    diff = {r["key"]: r for r in find_table(html, "key", "seed0")}
    assert set(diff) == {"seed"} and diff["seed"]["seed2"] == "2"
    assert "max_steps: 8" in html


# -- run dirs and bad input -------------------------------------------------------------------
def test_compare_dir_expands_to_its_seeds(fake):
    root, _ = fake
    runs = load_runs([root])
    assert [r.name for r in runs] == ["seed0", "seed1", "seed2"]
    assert [r.name for r in load_runs([root / "seed1"])] == ["seed1"]


def test_not_a_run_dir(tmp_path):
    with pytest.raises(NotARunDirError, match="no such directory"):
        build_report([tmp_path / "missing"], tmp_path / "r.html", QUIET)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotARunDirError, match="not a run directory"):
        build_report([tmp_path / "empty"], tmp_path / "r.html", QUIET)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(NotARunDirError, match="not a directory"):
        build_report([tmp_path / "f.txt"], tmp_path / "r.html", QUIET)
    with pytest.raises(NotARunDirError):
        build_report([], tmp_path / "r.html", QUIET)
    assert not (tmp_path / "r.html").exists()
    assert issubclass(NotARunDirError, ReportError)


def test_report_path_that_is_a_directory(fake, tmp_path):
    root, _ = fake
    with pytest.raises(ReportError, match="is a directory"):
        build_report([root / "seed0"], tmp_path, QUIET)


@pytest.mark.slow
def test_half_written_and_malformed_lines_are_skipped_with_a_warning(tmp_path):
    train, test = _ids()
    run = write_fake_run(tmp_path / "r", train[:8], test[:6], seed=3, methods=("eef",),
                         iterations=1)
    good = metrics(run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"stage": "eval/eef/it2", "method": "eef", "iteration": 2, "win_ra')  # killed
    with open(run / "rollouts/eval/eef/it1.jsonl", "a") as f:
        f.write("not json\n")
    (run / "labels/eef-it1.jsonl").write_text(
        (run / "labels/eef-it1.jsonl").read_text() + '{"task_id": 3}\n')
    with pytest.warns(ReportWarning) as rec:
        out = build_report([run], tmp_path / "r.html", QUIET)
    msgs = " ".join(str(w.message) for w in rec)
    assert "metrics.jsonl" in msgs and "half-written" in msgs
    assert "it1.jsonl" in msgs and "labels" in msgs
    html = out.read_text()
    assert "input problem(s) skipped" in html
    rows = find_table(html, "method", "iteration", "runs")
    assert {(r["method"], r["iteration"]) for r in rows} == {("sft", "0"), ("eef", "0"), ("eef", "1")}
    ev = next(r for r in good if r["stage"] == "eval/eef/it1")
    row = next(r for r in rows if r["method"] == "eef" and r["iteration"] == "1")
    assert row["win rate (%)"] == pct(ev["win_rate"], 0.0)


@pytest.mark.slow
def test_report_command_lists_skipped_input(tmp_path):
    import io

    from rich.console import Console

    from eef.report.html import report_command
    train, test = _ids()
    run = write_fake_run(tmp_path / "r", train[:5], test[:4], seed=4, methods=("rft",),
                         iterations=1)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"stage": "eval/rft/it2", "win')
    buf = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks out as a Python warning
        p = report_command([run], tmp_path / "out/r.html", QUIET, Console(file=buf, width=200))
    text = buf.getvalue()
    assert p == tmp_path / "out/r.html" and p.is_file()
    assert "1 input problem(s) skipped" in text and "half-written" in text and "wrote" in text


def test_garbage_files_never_raise(tmp_path):
    run = tmp_path / "r"
    (run / "labels").mkdir(parents=True)
    (run / "config.yaml").write_text("env: [unclosed\n")
    (run / "metrics.jsonl").write_text('[1, 2]\n{"stage": "eval/x", "method": 3}\n'
                                       '{"stage": "expert", "win_rate": "high"}\n')
    (run / "expert.jsonl").write_text('{"task_id": "a"}\n{"task_id": "a", "env": "x", "reward": NaN, '
                                      '"steps": [{"action": "go", "observation": "o"}]}\n')
    (run / "labels/eef-it1.jsonl").write_text('{"task_id": "a", "states": [0], "solved": [true], '
                                              '"labels": []}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        html = build_report([run], tmp_path / "r.html", QUIET).read_text()
    assert "input problem(s) skipped" in html and "not valid YAML" in html
    assert len(fig1_data(html)) == 1


# -- task categories --------------------------------------------------------------------------
def test_sciworld_and_unknown_categories():
    cats = TaskCategories()
    assert cats("sciworld/boil/3") == "boil"
    assert cats("sciworld/find-living-thing/0") == "find-living-thing"
    assert cats("other/abc/1") == "abc"


def test_webshop_categories_without_a_catalogue(tmp_path):
    cats = TaskCategories(str(tmp_path))
    assert cats("webshop/B07B6DVG41/0") == "B07B6DVG41"
    assert cats.note and "unavailable" in cats.note


@pytest.mark.needs_data
def test_webshop_categories_from_the_catalogue(tmp_path):
    from eef.envs.webshop.data import load_catalogue
    cat = load_catalogue()
    goals = [g for g in cat.goals if g.split == "train"][:60:3]
    tests = [g for g in cat.goals if g.split == "test"][:15]
    run = write_fake_run(tmp_path / "r", [g.task_id for g in goals], [g.task_id for g in tests],
                         seed=5, methods=("eef",), iterations=1)
    html = build_report([run], tmp_path / "r.html", QUIET).read_text()
    rows = {r["category"]: r for r in find_table(html, "category")}
    assert set(rows) <= {"beauty", "electronics", "fashion", "garden", "grocery"}
    experts = read_jsonl(run / "expert.jsonl")
    by = {g.task_id: g.category for g in goals}
    for c, r in rows.items():
        ts = [t for t in experts if by[t.task_id] == c]
        if ts:
            wins = sum(t.success for t in ts)
            assert r["expert (train)"].startswith(f"{wins}/{len(ts)} ")
    evals = read_jsonl(run / "rollouts/eval/eef/it1.jsonl")
    assert sum(int(r["eef (final)"].split("/")[0]) for r in rows.values() if r["eef (final)"] != "–") \
        == sum(t.success for t in evals)


@pytest.mark.needs_data
def test_report_finds_the_data_dir_the_run_recorded(tmp_path, monkeypatch):
    from eef.paths import data_dir, record_data_dir, recorded_data_dir
    from eef.envs.webshop.data import load_catalogue
    goals = [g for g in load_catalogue().goals if g.split == "train"][:20:2]
    run = write_fake_run(tmp_path / "r", [g.task_id for g in goals], [], seed=5,
                         methods=("eef",), iterations=1)
    record_data_dir(run)  # as `eef run` does, with EEF_DATA_DIR set
    assert recorded_data_dir(run) == recorded_data_dir(run / "sub") == data_dir().resolve()
    monkeypatch.delenv("EEF_DATA_DIR")
    monkeypatch.setenv("EEF_CACHE_DIR", str(tmp_path / "cache"))  # no data at the default
    html = build_report([run], tmp_path / "r.html", QUIET).read_text()
    assert "categories unavailable" not in html
    assert set(r["category"] for r in find_table(html, "category")) <= {
        "beauty", "electronics", "fashion", "garden", "grocery"}


# -- a real pipeline run ----------------------------------------------------------------------
SMALL = ["model.base=preset:test", "model.pretrain=false", "env.train_tasks=8", "env.eval_tasks=3",
         "env.options={max_steps: 5}", "method.iterations=1", "method.M=2",
         "train.epochs=1", "train.max_tokens=384", "train.batch_size=4",
         "sampling.max_new_tokens=12", "rollout.num_envs=2", "rollout.progress=false"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "run"
    args = ["run", TINY, "--out", str(out)] + [x for s in SMALL for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "eef.cli", *args], capture_output=True, text=True,
                       timeout=600, env=env, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.needs_data
def test_report_of_a_real_run(real_run, tmp_path):
    from eef.paths import data_dir, recorded_data_dir
    assert recorded_data_dir(real_run) == data_dir().resolve()  # recorded by `eef run`
    out = build_report([real_run], tmp_path / "real.html", QUIET)
    html = out.read_text(encoding="utf-8")
    ms = metrics(real_run)
    rows = {(r["method"], r["iteration"]): r for r in find_table(html, "method", "iteration", "runs")}
    for r in ms:
        if r["stage"].startswith("eval/"):
            row = rows[(r["method"], str(r["iteration"]))]
            assert row["win rate (%)"] == pct(r["win_rate"], 0.0)
            assert row["eval episodes"] == str(r["n"])
    labels = [json.loads(x) for x in (real_run / "labels/eef-it1.jsonl").read_text().splitlines()]
    entries = fig1_data(html)
    assert len(entries) == len(labels) == sum(not t.success for t in read_jsonl(real_run / "expert.jsonl"))
    for e, rec in zip(entries, labels):
        assert e["task"] == rec["task_id"]
        assert [st["k"] for st in e["states"]] == rec["states"]
        assert [x["l"] for x in e["expert"]["steps"]] == rec["labels"]
        for st in e["states"]:
            assert st["sims"], "every simulated state has its continuations"
    assert "input problem(s) skipped" not in html
    # the training table: every trained model, with the decision probe its training recorded
    trained = find_table(html, "run", "model", "trajectories")
    recs = [r for r in ms if r["stage"].startswith("train/")]
    assert [t["model"] for t in trained] == [r["stage"][len("train/"):] for r in recs]
    for t, r in zip(trained, recs):
        if r.get("same_as"):
            continue
        d = r["decisions"]
        assert t["steps"] == str(r["steps"]) and t["trajectories"] == str(r["examples"])
        assert t["first turn: argmax (%)"] == pct(d["first_turn_argmax"], 0.0).split(" ")[0]
        assert t["later: P"] == f"{d['later_p']:.2f}"


def test_training_table_without_or_with_a_damaged_probe(tmp_path):
    train, test = _ids()
    run = write_fake_run(tmp_path / "run", train, test, seed=0, iterations=1)
    with open(run / "metrics.jsonl", "a") as f:
        for row in ({"stage": "train/sft", "examples": 12, "steps": 3, "seconds": 90.0},
                    {"stage": "train/eef/it1", "examples": 14, "steps": 4, "seconds": "x",
                     "decisions": [0.5]},
                    {"stage": "train/rft/it1", "examples": 12, "steps": 3, "seconds": 90.0,
                     "same_as": "train/sft",
                     "decisions": {"first_turn_argmax": 0.25, "first_turn_p": 1.7}}):
            f.write(json.dumps(row) + "\n")
    with pytest.warns(ReportWarning, match="decisions .* is not a mapping"):
        html = build_report([run], tmp_path / "r.html", QUIET).read_text()
    rows = {r["model"]: r for r in find_table(html, "run", "model", "trajectories")}
    assert rows["sft"]["minutes"] == "1.5" and rows["sft"]["first turn: argmax (%)"] == "–"
    assert rows["eef/it1"]["minutes"] == "–" and rows["eef/it1"]["later: P"] == "–"
    assert rows["rft/it1"]["first turn: argmax (%)"] == "25.0"
    assert rows["rft/it1"]["first turn: P"] == "–"  # not a probability
    assert "same training as train/sft" in rows["rft/it1"]["note"]


def test_training_table_names_a_given_sft_model(tmp_path):
    train, test = _ids()
    run = write_fake_run(tmp_path / "run", train, test, seed=0, iterations=1)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"stage": "train/sft", "key": "k", "examples": 0, "steps": 0,
                            "same_as": "given", "init": "/models/pi0"}) + "\n")
    html = build_report([run], tmp_path / "r.html", QUIET).read_text()
    rows = {r["model"]: r for r in find_table(html, "run", "model", "trajectories")}
    assert "the given model (method.sft_model)" in rows["sft"]["note"]
    assert rows["sft"]["minutes"] == "–"


@pytest.mark.slow
def test_sciworld_run_and_a_run_without_results(tmp_path):
    train = [f"sciworld/{t}/{v}" for t in ("boil", "melt", "find-plant") for v in range(4)]
    test = [f"sciworld/{t}/{v}" for t in ("boil", "freeze") for v in range(3)]
    sw = write_fake_run(tmp_path / "sw", train, test, seed=2, methods=("eef",), iterations=1,
                        env="sciworld")
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh/config.yaml").write_text("env: {name: sciworld}\nseed: 9\n")
    with pytest.warns(ReportWarning, match="metrics.jsonl: missing"):
        html = build_report([sw, tmp_path / "fresh"], tmp_path / "r.html", QUIET).read_text()
    assert "Not applicable: no WebShop runs." in html
    cats = {r["category"]: r for r in find_table(html, "category")}
    assert set(cats) == {"boil", "melt", "find-plant", "freeze"}
    assert cats["freeze"]["expert (train)"] == "–" and cats["melt"]["eef (final)"] == "–"
    evals = [t for t in read_jsonl(sw / "rollouts/eval/eef/it1.jsonl") if t.task_id.startswith("sciworld/boil/")]
    assert cats["boil"]["eef (final)"].startswith(f"{sum(t.success for t in evals)}/{len(evals)} ")
    rows = find_table(html, "method", "iteration", "runs")
    assert {r["runs"] for r in rows} == {"1"}  # the fresh run adds nothing
    assert "fresh" in html and "no evaluations" in html
