"""The pipeline end to end on a very small budget (the 'test' preset, a handful of tasks),
resume after kill -9, and config errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eef.algorithms.config import ConfigError, load_config
from test_models_util import TINY

pytestmark = pytest.mark.needs_data

SMALL = ["model.base=preset:test", "model.pretrain=false", "env.train_tasks=8", "env.eval_tasks=3",
         "env.options={max_steps: 4}", "method.iterations=1", "method.M=1",
         "train.epochs=1", "train.max_tokens=384", "train.batch_size=4",
         "sampling.max_new_tokens=12", "rollout.num_envs=4", "rollout.progress=false"]


def _eef(args, **kw):
    return subprocess.run([sys.executable, "-m", "eef.cli", *args], capture_output=True,
                          text=True, **kw)


def _metrics(run: Path):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _evals(run: Path):
    return {r["stage"]: (r["n"], r["win_rate"], r["mean_score"]) for r in _metrics(run)
            if r["stage"].startswith("eval/") or r["stage"] == "expert"}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "clean"
    args = ["run", TINY, "--out", str(out)] + [x for s in SMALL for x in ("--set", s)]
    r = _eef(args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, args, r


@pytest.mark.slow
def test_run_writes_the_run_dir(clean_run):
    out, _, r = clean_run
    assert (out / "config.yaml").exists() and (out / "expert.jsonl").exists()
    stages = {p.name for p in (out / "stages").iterdir()}
    for s in ("expert.json", "train__sft.json", "rollout__eval__sft.json",
              "rollout__eef__it1__s0.json", "rollout__eef__it1__sim.json",
              "rollout__eval__eef__it1.json"):
        assert s in stages
    # iteration 1 trained, or (no new sample: the same data as SFT) used the SFT model as is
    rows = {r["stage"]: r for r in _metrics(out)}
    if "train__eef__it1.json" not in stages:
        assert rows["train/eef/it1"]["same_as"] == "train/sft"
        assert rows["train/eef/it1"]["key"] == rows["train/sft"]["key"]
        assert (out / "rollouts/eval/eef/it1.jsonl").read_bytes() == \
            (out / "rollouts/eval/sft.jsonl").read_bytes()
    ev = _evals(out)
    assert set(ev) == {"expert", "eval/sft", "eval/eef/it1"}
    assert ev["eval/sft"][0] == 3
    labels = [json.loads(x) for x in (out / "labels/eef-it1.jsonl").read_text().splitlines()]
    assert labels and all(len(r["states"]) == len(r["solved"]) for r in labels)
    # the iteration's training set records per-step labels and masks
    data = [json.loads(x) for x in (out / "data/eef/it1.jsonl").read_text().splitlines()]
    assert any(t["source"].get("kind") == "expert" for t in data)
    assert "eef" in r.stdout and "sft" in r.stdout  # the summary table


@pytest.mark.slow
def test_rerun_reuses_every_stage(clean_run):
    out, args, _ = clean_run
    before = {p.name: p.stat().st_mtime for p in (out / "stages").iterdir()}
    t0 = time.time()
    r = _eef(args, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    after = {p.name: p.stat().st_mtime for p in (out / "stages").iterdir()}
    assert before == after  # nothing recomputed
    assert time.time() - t0 < 120


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_results(clean_run, tmp_path):
    _, args, _ = clean_run
    out = tmp_path / "killed"
    args = [a if not a.startswith(str(clean_run[0])) else str(out) for a in args]
    p = subprocess.Popen([sys.executable, "-m", "eef.cli", *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "stages" / "train__sft.json").exists():
        time.sleep(0.5)
    time.sleep(1.0)  # into the next stage
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    r = _eef(args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _evals(out) == _evals(clean_run[0])


@pytest.mark.slow
def test_a_given_sft_model_replaces_the_sft_stage(clean_run, tmp_path):
    """method.sft_model: no SFT training; the given model is evaluated as SFT (the same
    episodes as when this run trained it) and explores the iteration."""
    first, args, _ = clean_run
    out = tmp_path / "given"
    given = first / "models" / "sft"
    args = [a if not a.startswith(str(first)) else str(out) for a in args]
    r = _eef(args + ["--set", f"method.sft_model={given}"], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    stages = {p.name for p in (out / "stages").iterdir()}
    assert "train__sft.json" not in stages and "rollout__eef__it1__s0.json" in stages
    rows = {r["stage"]: r for r in _metrics(out)}
    assert rows["train/sft"]["same_as"] == "given" and rows["train/sft"]["init"] == str(given)
    assert _evals(out)["eval/sft"] == _evals(first)["eval/sft"]
    # the given model explored: the same start-state episodes as the model it is
    def episodes(run):
        rows = [json.loads(x) for x in (run / "rollouts/eef/it1/s0.jsonl").read_text().splitlines()]
        for t in rows:
            t["meta"].pop("wall_s")
        return rows
    assert episodes(out) == episodes(first)


def test_round_robin_by_type():
    from eef.envs.base import round_robin_by_type
    ids = ["sw/boil/1", "sw/boil/2", "sw/boil/3", "sw/melt/7", "sw/find-animal/4", "sw/find-animal/5"]
    got = round_robin_by_type(ids)
    assert got == ["sw/boil/1", "sw/melt/7", "sw/find-animal/4", "sw/boil/2", "sw/find-animal/5",
                   "sw/boil/3"]
    assert sorted(got) == sorted(ids) and round_robin_by_type([]) == []
    assert round_robin_by_type(["webshop/3", "webshop/1"]) == ["webshop/3", "webshop/1"]


@pytest.mark.slow
def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TINY, ["method.nope=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {name: ppo}\n")
    with pytest.raises(ConfigError, match="ppo"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    for override, msg in (("env.eval_order=random", "eval_order"),
                          ("model.prefix_cache_mb=-1", "prefix_cache_mb"),
                          ("model.max_context=8", "max_context"), ("method.rft_n=0.5", "rft_n"),
                          ("method.rft_match=floor", "rft_match"),
                          ("method.rft_keep=longest", "rft_keep"),
                          ("method.sim_steps=all",
                           "method.sim_steps: 'all' is not one of remaining, full"),
                          ("model.dtype=half", "model.dtype: 'half'"),
                          ("train.mixed_precision=bf17", "train.mixed_precision"),
                          ("sampling.max_new_tokens=0", "sampling.max_new_tokens must be >= 1"),
                          (f"method.sft_model={tmp_path / 'none'}", "no such directory"),
                          (f"method.sft_model={tmp_path}", "neither config.json")):
        with pytest.raises(ConfigError, match=msg):
            load_config(TINY, [override])
    r = _eef(["run", str(bad)])
    assert r.returncode == 2 and "ppo" in r.stderr
    for f in Path(__file__).resolve().parents[1].glob("configs/*.yaml"):
        load_config(f)  # every shipped config loads


def test_one_parser_for_every_key_value_option():
    from eef.algorithms.config import apply_overrides, parse_assignments
    assert parse_assignments(["a=5", "b=3e-4", "c=true", "d=null", "e=[x, y]", "f=spacy",
                              "g={max_steps: 8}"], "--env-opt") == [
        ("a", 5), ("b", "3e-4"), ("c", True), ("d", None), ("e", ["x", "y"]), ("f", "spacy"),
        ("g", {"max_steps": 8})]
    assert apply_overrides({"method": {"M": 2}}, ["method.M=5", "train.lr=0.1"]) == {
        "method": {"M": 5}, "train": {"lr": 0.1}}
    with pytest.raises(ConfigError, match="--env-opt takes KEY=VALUE"):
        parse_assignments(["max_steps"], "--env-opt")
    with pytest.raises(ConfigError, match="method is not a section"):
        apply_overrides({"method": 3}, ["method.M=5"])
    with pytest.raises(ConfigError, match="invalid value"):
        load_config(TINY, ["method.M=[1"])
    assert load_config(TINY, ["train.lr=3e-4"]).train.lr == 3e-4


def test_rft_xn_samples_a_fractional_n_exactly():
    from eef.algorithms.rft import samples_per_task
    ids = [f"t{i}" for i in range(40)]
    assert samples_per_task(ids, 2, 5) == {t: 2 for t in ids}
    got = samples_per_task(ids, 2.3, 5)
    assert sum(got.values()) == 92 and set(got.values()) == {2, 3}
    assert got == samples_per_task(ids, 2.3, 5) and got != samples_per_task(ids, 2.3, 6)
    assert sum(samples_per_task(ids, 1.01, 0).values()) == 40  # 0.4 extra rollouts round to 0


def test_rft_n_matches_what_rft_match_says():
    from types import SimpleNamespace

    from eef.algorithms.pipeline import rft_n_for
    rows = [{"method": "eef", "iteration": i + 1, "samples_per_state": 1,
             "budget_s0": {"episodes": 10, "env_steps": 100, "generated_tokens": 900,
                           "prefill_tokens": 100},
             "budget_sim": {"episodes": e, "env_steps": s, "generated_tokens": 1000,
                            "prefill_tokens": t}}
            for i, (e, s, t) in enumerate(((20, 40, 1000), (5, 70, 2000)))]
    run = SimpleNamespace(metrics=lambda: rows)
    for over, n in (([], 1.55), (["method.rft_round=true"], 2), (["method.rft_n=3"], 3),
                    (["method.rft_match=episodes"], 2.25), (["method.rft_match=tokens"], 3.5),
                    (["method.rft_match=exact"], [1.4, 1.7]),
                    (["method.rft_match=exact", "method.rft_round=true"], [1, 2])):
        assert rft_n_for(SimpleNamespace(cfg=load_config(TINY, over), run=run)) \
            == pytest.approx(n)
    with pytest.raises(ValueError, match="EEF run"):
        rft_n_for(SimpleNamespace(cfg=load_config(TINY), run=SimpleNamespace(metrics=list)))
    for r in rows:  # a policy that reports no tokens
        r["budget_s0"].update(generated_tokens=0, prefill_tokens=0)
    with pytest.raises(ValueError, match="tokens"):
        rft_n_for(SimpleNamespace(cfg=load_config(TINY, ["method.rft_match=tokens"]), run=run))
    with pytest.raises(ConfigError, match="rft_round"):
        load_config(TINY, ["method.rft_match=round"])


def test_method_budget_is_the_last_cumulative_budget_row():
    from eef.algorithms.pipeline import method_budget
    rows = [{"stage": "eef/it1/budget", "budget": {"env_steps": 10, "prompt_tokens": 7}},
            {"stage": "eef/it2/budget", "budget": {"env_steps": 25, "prompt_tokens": 9}},
            {"stage": "rft/it1/budget", "budget": {"env_steps": 99}}]
    got = method_budget(rows, "eef")
    assert got["env_steps"] == 25 and got["prompt_tokens"] == 9 and got["episodes"] == 0
    assert method_budget(rows, "sft")["env_steps"] == 0


@pytest.mark.slow
def test_model_policy_takes_the_prefix_cache_setting(tmp_path):
    from eef.algorithms.context import Context
    from eef.algorithms.policies import load_model_policy
    from eef.presets import init_preset
    model = init_preset("test", "webshop", tmp_path / "m")
    for mb, on in ((0, False), (8, True)):
        cfg = load_config(TINY, [f"model.prefix_cache_mb={mb}", "model.trim_block=3"])
        pol = load_model_policy(Context(cfg, None, None), model)
        assert (pol.prefix_cache is not None) is on and pol.trim_block == 3
        assert pol.max_context == pol.model.config.max_position_embeddings  # default
    pol = load_model_policy(Context(load_config(TINY, ["model.max_context=256"]), None, None),
                            model)
    assert pol.max_context == 256


def test_model_key_is_the_content_of_the_weights_a_lora_adapter_first(tmp_path):
    import os
    import shutil

    from eef.algorithms.rundir import model_key
    d = tmp_path / "m"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(b"a" * 10)
    k1 = model_key(d)
    (d / "adapter_model.safetensors").write_bytes(b"b" * 12)  # a retrained adapter
    os.utime(d / "adapter_model.safetensors", (1, 1))
    assert model_key(d) != k1 and model_key(d).startswith("adapter_model")
    shutil.copytree(d, tmp_path / "copy")  # the same weights elsewhere, at another time
    assert model_key(tmp_path / "copy") == model_key(d)
    (d / "adapter_model.safetensors").unlink()
    (d / "model.safetensors").write_bytes(b"c")
    assert model_key(d).startswith("model.safetensors")
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    (d / "model-00002-of-00002.safetensors").write_bytes(b"d")
    assert model_key(d).startswith("shards-")
    assert model_key(tmp_path / "hub/name") == str(tmp_path / "hub/name")


def test_policy_device_option():
    import torch

    from eef.algorithms.config import load_config
    from eef.algorithms.policies import policy_device
    assert load_config(TINY).model.device == "auto"
    assert load_config(TINY, ["model.device=cuda:1"]).model.device == "cuda:1"
    assert policy_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert policy_device("cuda:1") == "cuda:1" and policy_device("cpu") == "cpu"


def test_embedded_default_is_the_shipped_webshop_smollm2_config():
    # the packaged default (eef/algorithms/default.yaml) and its documented copy in configs/
    from eef.algorithms.config import default_yaml, to_dict
    shipped = Path(__file__).resolve().parents[1] / "configs/webshop-smollm2.yaml"
    assert default_yaml() == shipped.read_text(encoding="utf-8")
    assert to_dict(load_config(None)) == to_dict(load_config(shipped))
    assert load_config(None).model.base == "hf:smollm2-135m-instruct"
    assert load_config(TINY).model.base == "preset:tiny"  # the from-scratch baseline


@pytest.mark.slow
def test_compare_runs_every_method_per_seed_at_matched_budget(tmp_path):
    from eef.algorithms.pipeline import method_budget
    out = tmp_path / "cmp"
    r = _eef(["compare", TINY, "--methods", "sft,rft,rft_xn,eef", "--seeds", "2", "--out", str(out)]
             + [x for s in SMALL + ["env.options={max_steps: 8}", "env.train_tasks=12"]
                for x in ("--set", s)], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads((out / "results.json").read_text())
    # EEF first; the expert on the same eval goals last (no training, no budget)
    assert [row["method"] for row in table] == ["eef", "sft", "rft", "rft_xn", "expert"]
    assert all(row["seeds"] == 2 for row in table)
    by = {row["method"]: row for row in table}
    assert by["sft"]["env_steps_mean"] == 0 and by["eef"]["env_steps_mean"] > 0
    assert by["expert"]["runs"] == 2 and "env_steps_mean" not in by["expert"]
    ex = [next(x for x in _metrics(out / f"seed{s}") if x["stage"] == "expert/eval")
          for s in (0, 1)]
    assert [x["n"] for x in ex] == [3, 3] and by["expert"]["score_mean"] == \
        pytest.approx(sum(x["mean_score"] for x in ex) / 2)
    # paired per-goal differences (eef.report.comparison) written beside results.json
    paired = json.loads((out / "paired.json").read_text())
    assert ("eef", "expert") in {(p["a"], p["b"]) for p in paired["pairs"]}
    assert all(p["goals"] == 3 and p["runs_a"] == 2 for p in paired["pairs"])
    assert [(r["method"], r["iteration"]) for r in paired["solvable_failures"]] == \
        [("eef", 1), ("eef", None)]
    assert (out / "paired.md").is_file() and "paired per-goal differences" in r.stdout
    for seed in (0, 1):
        rows = _metrics(out / f"seed{seed}")
        assert {m for m in ("sft", "rft", "rft_xn", "eef")
                if any(x["stage"].startswith("eval/") and x.get("method") == m for x in rows)} \
            == {"sft", "rft", "rft_xn", "eef"}
        eef, xn = method_budget(rows, "eef"), method_budget(rows, "rft_xn")
        n = next(x["n"] for x in rows if x["stage"] == "rft_xn/it1/budget")
        one = method_budget(rows, "rft")["env_steps"]
        # N was chosen so that RFT×N's env steps come closest to EEF's (one rollout per task
        # costs what RFT's costs)
        assert abs(xn["env_steps"] - eef["env_steps"]) <= one / 2 + 1e-9 or n == 1
    assert "rft_xn" in r.stdout and "env_steps_mean" in r.stdout


@pytest.mark.slow
def test_train_seeds_retrain_on_the_same_data(tmp_path):
    from eef.algorithms.pipeline import compare_runs
    assert compare_runs([0, 1], 2) == [(0, None, "seed0"), (0, 1000, "seed0-train1000"),
                                       (1, None, "seed1"), (1, 1001, "seed1-train1001")]
    with pytest.raises(ValueError, match="train_seeds"):
        compare_runs([0], 0)
    out = tmp_path / "cmp"
    r = _eef(["compare", TINY, "--methods", "sft", "--seeds", "1", "--train-seeds", "2",
              "--out", str(out)] + [x for s in SMALL for x in ("--set", s)], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    row, expert = json.loads((out / "results.json").read_text())  # the expert row last
    assert expert["method"] == "expert"
    assert row["seeds"] == 1 and row["runs"] == 2
    a, b = out / "seed0", out / "seed0-train1000"

    def trajs(f):  # without the wall time of each episode
        return [{k: v for k, v in json.loads(x).items() if k != "meta"}
                for x in f.read_text().splitlines()]

    # same tasks and expert data, another training run
    assert trajs(a / "expert.jsonl") == trajs(b / "expert.jsonl")
    assert trajs(a / "data" / "sft.jsonl") == trajs(b / "data" / "sft.jsonl")
    seeds = [json.loads((d / "models" / "sft" / "eef_train.json").read_text())["config"]["seed"]
             for d in (a, b)]
    assert seeds == [0, 1000]
    r = _eef(["compare", TINY, "--methods", "sft", "--train-seeds", "0", "--out", str(out)])
    assert r.returncode != 0 and "--train-seeds" in r.stderr + r.stdout


@pytest.mark.slow
def test_explore_tasks_limits_rollouts_not_training(tmp_path):
    from eef.algorithms.context import explore_subset
    from eef.trajectory import read_jsonl
    ids = [f"t{i}" for i in range(10)]
    assert explore_subset(ids, None, 0) == ids and explore_subset(ids, 12, 0) == ids
    sub = explore_subset(ids, 4, 0)
    assert len(sub) == 4 and set(sub) < set(ids) and sub == sorted(sub)
    assert sub == explore_subset(ids, 4, 0) and sub != explore_subset(ids, 4, 1)
    with pytest.raises(ConfigError, match="explore_tasks"):
        load_config(TINY, ["method.explore_tasks=0"])
    out = tmp_path / "explore"
    for m in ("eef", "rft"):
        r = _eef(["run", TINY, "--out", str(out)] + [x for s in SMALL + [
            f"method.name={m}", "method.explore_tasks=3", "env.options={max_steps: 8}"]
            for x in ("--set", s)], timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
    experts = read_jsonl(out / "expert.jsonl")
    assert len(experts) == 8
    explored = set(explore_subset(sorted(t.task_id for t in experts), 3, 0))
    for name in ("eef/it1/s0", "rft/it1/s0"):
        assert {t.task_id for t in read_jsonl(out / f"rollouts/{name}.jsonl")} == explored
    sims = read_jsonl(out / "rollouts/eef/it1/sim.jsonl")
    assert {t.task_id for t in sims} <= explored
    assert {r["task_id"] for r in map(json.loads, (out / "labels/eef-it1.jsonl").open())} \
        <= explored
    # fine-tuning still sees every expert success
    sft = {t.task_id for t in read_jsonl(out / "data/sft.jsonl")}
    assert sft == {t.task_id for t in experts if t.success}
    assert sft <= {t.task_id for t in read_jsonl(out / "data/eef/it1.jsonl")}


@pytest.mark.slow
def test_replay_mixes_pretraining_sequences_into_training(tmp_path):
    from eef.trajectory import read_jsonl
    with pytest.raises(ConfigError, match="model.replay"):
        load_config(TINY, ["model.base=hf:somewhere", "model.replay=3"])
    with pytest.raises(ConfigError, match="model.replay"):
        load_config(TINY, ["model.pretrain=false", "model.replay=3"])
    with pytest.raises(ConfigError, match="model.replay"):
        load_config(TINY, ["model.replay=-1"])
    out = tmp_path / "replay"
    opts = ("model.preset_options={explore_episodes: 2, lookup_drills: 3, pick_tasks: 4, "
            "search_drills: 3, short_drills: 2, short_replay: 1, warmup_steps: 0, steps: 2, "
            "batch_size: 4, max_tokens: 1000, max_hits: 3}")
    args = ["run", TINY, "--out", str(out)] + [x for s in SMALL + [
        "model.pretrain=true", "method.name=sft", "model.replay=6", opts] for x in ("--set", s)]
    r = _eef(args, timeout=900, env={**os.environ, "EEF_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    data = read_jsonl(out / "data/sft.jsonl")
    replayed = [t for t in data if t.source.kind == "pretrain"]
    experts = [t for t in data if t.source.kind != "pretrain"]
    assert len(replayed) == 6 and all(t.success for t in experts)
    assert {t.source.extra["task"] for t in replayed} <= {"lookup", "explore", "search", "pick"}
    row = next(m for m in _metrics(out) if m["stage"] == "train/sft")
    assert row["examples"] == len(data)
