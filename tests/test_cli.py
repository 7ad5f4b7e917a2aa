import json

import pytest
from typer.testing import CliRunner

from eef.cli import app
from eef.trajectory import read_jsonl

pytestmark = pytest.mark.needs_data
runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_tasks_json_lists_splits():
    r = run("tasks", "webshop", "--split", "test", "--json")
    assert r.exit_code == 0
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 116 and all(x["split"] == "test" for x in rows)
    assert {"id", "asin", "attributes", "goal_options", "price_upper", "instruction"} <= set(rows[0])
    r = run("tasks", "webshop", "--split", "all", "--json")
    splits = {json.loads(x)["split"] for x in r.stdout.splitlines()}
    assert splits == {"train", "test", None}


def test_eval_json_and_tasks_file(tmp_path):
    # an id in neither split is accepted by --tasks
    other = next(json.loads(x)["id"] for x in run("tasks", "webshop", "--json").stdout.splitlines()
                 if json.loads(x)["split"] is None)
    f = tmp_path / "ids.txt"
    f.write_text(f"# a comment\nwebshop/B08ZRR3DZT/3\n{other}\n")
    r = run("eval", "webshop", "--policy", "expert:oracle", "--tasks", str(f), "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["n"] == 2 and d["win_rate"] == 1.0 and d["mean_score"] == 100.0
    assert [t["id"] for t in d["tasks"]] == ["webshop/B08ZRR3DZT/3", other]


def test_collect_writes_and_resumes(tmp_path):
    out = tmp_path / "h.jsonl"
    r = run("expert", "collect", "webshop", "--expert", "heuristic", "--limit", "6", "--out", str(out))
    assert r.exit_code == 0
    trajs = read_jsonl(out)
    assert len(trajs) == 6 and all(t.source.policy == "expert:heuristic" for t in trajs)
    # simulate a kill mid-write: drop the last 3 records and leave a half line
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:40])
    r = run("expert", "collect", "webshop", "--expert", "heuristic", "--limit", "6", "--out", str(out))
    assert r.exit_code == 0
    again = read_jsonl(out)
    assert [t.task_id for t in again] == [t.task_id for t in trajs]
    assert [t.actions for t in again] == [t.actions for t in trajs]


@pytest.mark.parametrize("args,msg", [
    (("eval", "webshop", "--policy", "expert:nope"), "unknown expert"),
    (("eval", "webshop", "--policy", "bogus"), "bad policy spec"),
    (("eval", "nosuchenv", "--policy", "expert:oracle"), "unknown env"),
    (("tasks", "webshop", "--split", "dev"), "splits"),
    (("eval", "webshop", "--policy", "expert:oracle", "--tasks", "missing.txt"), "no such file"),
    (("expert", "collect", "webshop", "--expert", "llm", "--out", "x.jsonl"), "--policy"),
    (("data", "download", "nosuchdata"), "unknown data set"),
    (("eval", "webshop", "--policy", "expert:oracle", "--system", "hi"), "--system is for"),
    (("eval", "webshop", "--policy", "expert:oracle", "--max-new-tokens", "0"), ">= 1"),
    (("eval", "webshop", "--policy", "expert:oracle", "--workers", "-1"), "--workers must"),
    (("eval", "webshop", "--policy", "expert:oracle", "--max-context", "512"), "--max-context"),
    (("eval", "webshop", "--policy", "expert:oracle", "--workers", "2", "--num-envs", "4"),
     "leave out --num-envs"),
    (("expert", "collect", "webshop", "--expert", "oracle", "--out", "x.jsonl", "--workers",
      "-2"), "--workers must"),
    (("compare", "--resample", "product", "--out", "x"), "--resample 'product': one of family"),
    (("report", "x", "--resample", "seed"), "resample 'seed': one of family"),
])
def test_bad_input_gets_one_clear_error(args, msg):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 2
    assert msg in r.output


def test_tasks_by_type_and_limit():
    rows = [json.loads(x) for x in run("tasks", "webshop", "--split", "test", "--json",
                                       "--by-type", "--limit", "5").stdout.splitlines()]
    types = [r["id"].rsplit("/", 1)[0] for r in rows]
    assert len(rows) == 5 and len(set(types)) == 5  # five products, one goal each
    plain = [json.loads(x)["id"] for x in run("tasks", "webshop", "--split", "test", "--json",
                                              "--limit", "3").stdout.splitlines()]
    assert len(plain) == 3 and len({i.rsplit("/", 1)[0] for i in plain}) < 3
    assert runner.invoke(app, ["tasks", "webshop", "--limit", "0"]).exit_code == 2


def test_tasks_output_is_a_tasks_file(tmp_path):
    # `eef tasks` prints id, split and instruction; --tasks reads its first column
    lines = run("tasks", "webshop", "--split", "test").stdout.splitlines()[:2]
    f = tmp_path / "ids.txt"
    f.write_text("\n".join(lines) + "\n")
    d = json.loads(run("eval", "webshop", "--policy", "expert:oracle", "--tasks", str(f),
                       "--json").stdout)
    assert [t["id"] for t in d["tasks"]] == [ln.split("\t")[0] for ln in lines]


@pytest.mark.slow
def test_collect_with_worker_processes_matches_sequential(tmp_path):
    seq, par = tmp_path / "seq.jsonl", tmp_path / "par.jsonl"
    for out, extra in ((seq, ()), (par, ("--workers", "2"))):
        r = run("expert", "collect", "webshop", "--expert", "heuristic", "--limit", "4",
                "--max-steps", "6", "--out", str(out), *extra)
        assert r.exit_code == 0, r.output

    def by_id(p):
        return {t.task_id: ([s.action for s in t.steps], t.reward) for t in read_jsonl(p)}
    assert len(by_id(par)) == 4 and by_id(par) == by_id(seq)
    r = run("expert", "collect", "webshop", "--expert", "heuristic", "--limit", "4",
            "--max-steps", "6", "--out", str(par), "--workers", "2")  # resumes: nothing to do
    assert r.exit_code == 0 and len(read_jsonl(par)) == 4, r.output


def test_bad_task_id_in_file(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("webshop/NOPE/1\n")
    r = runner.invoke(app, ["eval", "webshop", "--policy", "expert:oracle", "--tasks", str(f)])
    assert r.exit_code == 2 and "unknown webshop task id" in r.output


def test_resume_refuses_a_corrupt_file(tmp_path):
    out = tmp_path / "bad.jsonl"
    out.write_text("not json at all\n{}\n")
    r = runner.invoke(app, ["expert", "collect", "webshop", "--expert", "oracle", "--limit", "2",
                            "--out", str(out)])
    assert r.exit_code == 2 and "cannot resume" in r.output
    assert out.read_text() == "not json at all\n{}\n"  # nothing lost


def test_show_pretty_prints(tmp_path):
    out = tmp_path / "o.jsonl"
    run("expert", "collect", "webshop", "--expert", "oracle", "--limit", "2", "--out", str(out))
    first = read_jsonl(out)[0]
    r = run("show", str(out), "--task", first.task_id)
    assert r.exit_code == 0 and first.task_id in r.stdout and "click[buy now]" in r.stdout
    r = runner.invoke(app, ["show", str(out), "--task", "nope"])
    assert r.exit_code == 1 and "no trajectory" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n{}\n")
    r = runner.invoke(app, ["show", str(bad)])
    assert r.exit_code == 2 and "bad.jsonl:1" in r.output


def test_eval_through_the_batched_engine(tmp_path):
    # --num-envs > 1 sends even a scripted expert through the engine: same results
    seq = json.loads(run("eval", "webshop", "--policy", "expert:heuristic", "--limit", "6",
                         "--json").stdout)
    out = tmp_path / "e.jsonl"
    eng = json.loads(run("eval", "webshop", "--policy", "expert:heuristic", "--limit", "6",
                         "--num-envs", "3", "--out", str(out), "--json").stdout)
    assert [t["reward"] for t in eng["tasks"]] == [t["reward"] for t in seq["tasks"]]
    assert eng["win_rate"] == seq["win_rate"] and len(read_jsonl(out)) == 6


def test_report_command(tmp_path):
    from report_fakes import write_fake_run
    r = run("report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html"))
    assert r.exit_code == 2 and "no such directory" in r.output
    assert not (tmp_path / "r.html").exists()
    run_dir = tmp_path / "run"
    write_fake_run(run_dir, ["webshop/B08ZRR3DZT/3"], ["webshop/B08ZRR3DZT/3"])
    r = run("report", str(run_dir), "--out", str(tmp_path / "r.html"))
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Figure 1" in html


@pytest.mark.slow
def test_eval_model_with_system_and_turn_length(tmp_path):
    from eef.presets import init_preset
    model = init_preset("test", "webshop", tmp_path / "m")
    out = tmp_path / "e.jsonl"
    r = run("eval", "webshop", "--policy", f"hf:{model}", "--limit", "2", "--max-steps", "2",
            "--max-new-tokens", "3", "--system", "You shop.", "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 2 and all(1 <= t["steps"] <= 2 for t in d["tasks"])
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    for t in read_jsonl(out):  # a 3-token turn: the action is at most 3 tokens long
        for s in t.steps:
            assert len(tok(s.action, add_special_tokens=False)["input_ids"]) <= 3
    r = run("eval", "webshop", "--policy", f"hf:{model}", "--limit", "1", "--max-steps", "2",
            "--max-new-tokens", "3", "--trim-block", "4", "--json")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", "webshop", "--policy", "expert:oracle", "--trim-block", "4"])
    assert r.exit_code != 0 and "--trim-block" in r.output
    r = run("eval", "webshop", "--policy", f"hf:{model}", "--limit", "1", "--max-steps", "2",
            "--max-new-tokens", "3", "--prefix-cache-mb", "0", "--json")
    assert r.exit_code == 0, r.output
    for bad in (["--policy", "expert:oracle", "--prefix-cache-mb", "0"],
                ["--policy", f"hf:{model}", "--prefix-cache-mb", "-1"]):
        r = runner.invoke(app, ["eval", "webshop", *bad])
        assert r.exit_code != 0 and "--prefix-cache-mb" in r.output
    r = run("eval", "webshop", "--policy", f"hf:{model}", "--limit", "1", "--max-steps", "3",
            "--max-new-tokens", "3", "--max-context", "200", "--json")
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", "webshop", "--policy", f"hf:{model}", "--max-context", "8"])
    assert r.exit_code == 2 and "--max-context" in r.output


def test_eval_ground_keeps_admissible_actions():
    # the oracle only writes admissible actions (searches fill the template): nothing replaced
    r = run("eval", "webshop", "--policy", "expert:oracle", "--ground", "--limit", "3", "--json")
    assert r.exit_code == 0
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["n"] == 3 and d["win_rate"] == 1.0 and d["grounded_steps"] == 0


def test_run_policy_is_a_library_call(tmp_path):
    from eef.policy import Sampling
    from eef.rollout.run import PolicyRunError, run_policy
    trajs = run_policy("webshop", "expert:oracle", split="test", limit=2,
                       out=tmp_path / "o.jsonl", sampling=Sampling(), env_options={"max_steps": 10})
    assert len(trajs) == 2 and all(t.success for t in trajs)
    for kw, msg in (({"env_name": "nosuchenv"}, "unknown env"),
                    ({"policy": "expert:nope"}, "unknown expert"),
                    ({"tasks_file": tmp_path / "missing.txt"}, "no such file")):
        args = {"env_name": "webshop", "policy": "expert:oracle", **kw}
        with pytest.raises(PolicyRunError, match=msg):
            run_policy(args.pop("env_name"), args.pop("policy"), **args)
