"""Run-dir stages: reuse by input key, shared work under another name, tampered outputs."""

import pytest

from eef.algorithms.rundir import RunDir, digest


def _writer(run, rel, text, calls):
    def go():
        calls.append(rel)
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
        return {"n": len(text)}
    return go


def test_same_key_under_another_name_is_copied_not_rerun(tmp_path):
    run, calls = RunDir(tmp_path / "r", {"a": 1}), []
    run.stage("rollout/eval/sft", {"k": 1}, ["rollouts/eval/sft.jsonl"],
              _writer(run, "rollouts/eval/sft.jsonl", "x\n", calls))
    res = run.stage("rollout/eval/eef/it1", {"k": 1}, ["rollouts/eval/eef/it1.jsonl"],
                    _writer(run, "rollouts/eval/eef/it1.jsonl", "never\n", calls),
                    share="rollout/")
    assert calls == ["rollouts/eval/sft.jsonl"]
    assert res == {"n": 2, "copied_from": "rollout/eval/sft"}
    assert (run / "rollouts/eval/eef/it1.jsonl").read_text() == "x\n"
    # the copy is a stage of its own: rerunning it does nothing
    run.stage("rollout/eval/eef/it1", {"k": 1}, ["rollouts/eval/eef/it1.jsonl"],
              _writer(run, "rollouts/eval/eef/it1.jsonl", "never\n", calls), share="rollout/")
    assert calls == ["rollouts/eval/sft.jsonl"]


def test_other_key_prefix_or_tampered_output_runs_the_stage(tmp_path):
    run, calls = RunDir(tmp_path / "r", {}), []
    run.stage("rollout/a", {"k": 1}, ["a.jsonl"], _writer(run, "a.jsonl", "a\n", calls))
    run.stage("rollout/b", {"k": 2}, ["b.jsonl"], _writer(run, "b.jsonl", "b\n", calls),
              share="rollout/")  # another key
    run.stage("train/c", {"k": 1}, ["c.jsonl"], _writer(run, "c.jsonl", "c\n", calls),
              share="train/")  # another prefix
    (run / "a.jsonl").write_text("tampered\n")
    assert run.find_done("rollout/", digest({"k": 1})) is None
    run.stage("rollout/d", {"k": 1}, ["d.jsonl"], _writer(run, "d.jsonl", "d\n", calls),
              share="rollout/")  # its only match is tampered
    assert calls == ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"]
    assert run.find_done("rollout/", digest({"k": 1}))["stage"] == "rollout/d"


def test_directory_outputs_are_copied_without_checkpoints(tmp_path):
    run, calls = RunDir(tmp_path / "r", {}), []

    def go():
        calls.append(1)
        (run / "models/a/checkpoint").mkdir(parents=True)
        (run / "models/a/w.bin").write_bytes(b"123")
        (run / "models/a/checkpoint/state").write_bytes(b"s")
    run.stage("train/a", {"k": 1}, ["models/a"], go)
    run.stage("train/b", {"k": 1}, ["models/b"], go, share="train/")
    assert calls == [1]
    assert (run / "models/b/w.bin").read_bytes() == b"123"
    assert not (run / "models/b/checkpoint").exists()


def test_outputs_of_other_inputs_are_set_aside_and_a_killed_run_resumes(tmp_path):
    """A stage killed mid-way resumes from its partial output under the same key; under
    another key (e.g. a changed temperature) the partial or finished output of the old key is
    renamed ``.stale-<old key>`` instead of being resumed; an output without any record of the
    stage (an older run dir) is kept."""
    import pytest
    run, seen = RunDir(tmp_path / "r", {}), []

    def go(text, die=False, rel="out.jsonl"):
        def fn():
            p = run / rel
            seen.append(p.read_text() if p.exists() else None)
            with open(p, "a") as f:
                f.write(text)
            if die:
                raise KeyboardInterrupt
            return {}
        return fn

    with pytest.raises(KeyboardInterrupt):
        run.stage("rollout/x", {"t": 1.0}, ["out.jsonl"], go("a\n", die=True))
    run.stage("rollout/x", {"t": 1.0}, ["out.jsonl"], go("b\n"))  # the same inputs: resumed
    assert seen == [None, "a\n"] and (run / "out.jsonl").read_text() == "a\nb\n"
    with pytest.raises(KeyboardInterrupt):
        run.stage("rollout/x", {"t": 0.5}, ["out.jsonl"], go("c\n", die=True))
    assert seen[-1] is None  # the finished output of t=1.0 was set aside
    assert (run / f"out.jsonl.stale-{digest({'t': 1.0})}").read_text() == "a\nb\n"
    run.stage("rollout/x", {"t": 0.7}, ["out.jsonl"], go("d\n"))
    assert seen[-1] is None  # the killed run of t=0.5 too
    assert (run / f"out.jsonl.stale-{digest({'t': 0.5})}").read_text() == "c\n"
    assert (run / "out.jsonl").read_text() == "d\n"
    assert not list((run / "stages").glob("*.started"))
    (run / "old.jsonl").write_text("legacy\n")  # no record, no marker: kept and resumed
    run.stage("rollout/y", {"t": 1.0}, ["old.jsonl"], go("e\n", rel="old.jsonl"))
    assert seen[-1] == "legacy\n" and (run / "old.jsonl").read_text() == "legacy\ne\n"


def test_a_rerun_stage_s_newest_metrics_row_is_the_current_one(tmp_path):
    # a stage rerun after a config change logs a new row; readers see only the newest per
    # stage (eef compare once took the first of two eval rows of one stage)
    run = RunDir(tmp_path / "r", {"a": 1})
    run.log_metrics({"stage": "eval/eef/it1", "key": "A", "win_rate": 0.1})
    run.log_metrics({"stage": "eef/it1/budget", "env_steps": 10})
    run.log_metrics({"stage": "eval/eef/it1", "key": "B", "win_rate": 0.3})
    run.log_metrics({"stage": "eef/it1/budget", "env_steps": 12})
    assert run.metrics() == [{"stage": "eval/eef/it1", "key": "B", "win_rate": 0.3},
                             {"stage": "eef/it1/budget", "env_steps": 12}]
    # back to the first config: its row becomes current again (not skipped as "seen")
    run.log_metrics({"stage": "eval/eef/it1", "key": "A", "win_rate": 0.1})
    assert run.metrics()[0] == {"stage": "eval/eef/it1", "key": "A", "win_rate": 0.1}
    # a resumed run logging its current rows again appends nothing
    n = len((run / "metrics.jsonl").read_text().splitlines())
    run.log_metrics({"stage": "eval/eef/it1", "key": "A", "win_rate": 0.1})
    run.log_metrics({"stage": "eef/it1/budget", "env_steps": 12})
    assert len((run / "metrics.jsonl").read_text().splitlines()) == n == 5
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"stage": "half-writ')  # a killed run's last line is skipped
    assert len(run.metrics()) == 2
    # the report reads the same rows the same way (one reader of "current"), and warns of a
    # row without a stage name instead of counting it
    from eef.report.rundata import ReportWarning, Run
    with open(run / "metrics.jsonl", "a") as f:
        f.write('\n{"win_rate": 0.9}\n')
    with pytest.warns(ReportWarning) as rec:
        assert Run(run.path, "r").metrics == [r for r in run.metrics() if "stage" in r]
    msgs = " ".join(str(w.message) for w in rec)
    assert "without a stage name" in msgs and "line 6: malformed" in msgs


def test_a_stage_that_ran_gives_memory_back_and_records_its_rss(tmp_path, monkeypatch):
    """After a stage's work the run dir releases freed memory (``eef.memory.release``) and
    records the resident set before and after and the allocator; a copied stage did no work
    and releases none."""
    import eef.algorithms.rundir as rundir
    released = []
    monkeypatch.setattr(rundir, "release", lambda: released.append(1) or
                        {"before_mb": 900, "after_mb": 300})
    run, calls = RunDir(tmp_path / "r", {}), []
    run.stage("rollout/a", {"k": 1}, ["a.jsonl"], _writer(run, "a.jsonl", "a\n", calls))
    rec = run.done("rollout/a", digest({"k": 1}))
    assert rec["rss_mb"] == {"before_mb": 900, "after_mb": 300} and released == [1]
    assert rec["allocator"] == "system"  # pytest's process: not re-executed on jemalloc
    run.stage("rollout/b", {"k": 1}, ["b.jsonl"], _writer(run, "b.jsonl", "b\n", calls),
              share="rollout/")
    assert calls == ["a.jsonl"] and released == [1]
