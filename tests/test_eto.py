"""ETO's preference pairs, the action-masked DPO loss and trainer (eef.models.dpo), SFT-all."""

from __future__ import annotations

import json

import pytest
import torch

from eef.algorithms.eto import best_successes, eto_pairs
from eef.models.dpo import (Pair, SequenceLogps, dpo_loss, encode_pairs, read_pairs, side_logps,
                            train_dpo, write_pairs)
from eef.models.format import ChatFormat
from eef.models.hparams import DPOConfig, TrainConfig
from eef.models.train import TrainError, train_sft
from eef.trajectory import Step, Trajectory
from test_models_util import cached_dir, copy_task, make_tokenizer, make_traj, tiny_model_dir, TINY


def traj(task: str, actions: list[str], reward: float, success: bool, **source) -> Trajectory:
    return Trajectory(task, "toy", f"do {task}", f"Instruction: [SEP] do {task}",
                      [Step(a, f"page after {a}", "", train=False) for a in actions], reward,
                      success, True, dict(source))


# -- pairs ------------------------------------------------------------------------------------
def test_eto_pairs_are_exactly_etos():
    experts = [traj("a", ["x1", "x2"], 1.0, True), traj("b", ["y1"], 0.8, True),
               traj("b", ["y1", "y2", "y3"], 0.8, True),  # same reward, longer: not the best
               traj("c", ["z1"], 0.0, False),             # expert failure: never paired
               traj("d", ["w1"], 1.0, True)]
    long_fail = [f"q{k}" for k in range(9)]
    rollouts = [traj("a", long_fail, 0.0, False, sample=0),   # lose: cut to 2 + 5 steps
                traj("b", ["v1", "v2"], 1.0, True, sample=0),  # win: the rollout is chosen
                traj("d", ["w1"], 1.0, True, sample=0),        # tie: no pair
                traj("c", ["u1"], 0.0, False, sample=0)]       # no expert success: unpaired
    assert {k: len(v) for k, v in best_successes(experts).items()} == {"a": 2, "b": 1, "d": 1}
    pairs, counts = eto_pairs(experts, list(reversed(rollouts)))
    assert counts == {"lose": 1, "win": 1, "tie": 1, "unpaired": 1}
    got = [(p.task_id, p.chosen.actions, p.rejected.actions) for p in pairs]
    assert got == [("a", ["x1", "x2"], long_fail[:7]),
                   ("b", ["v1", "v2"], ["y1"])]
    # every action of both sides is counted; the inputs are left as they were
    assert all(s.train for p in pairs for s in p.chosen.steps + p.rejected.steps)
    assert not any(s.train for t in experts + rollouts for s in t.steps)
    assert pairs[0].rejected.reward == 0.0 and pairs[1].chosen.success
    assert eto_pairs(experts, [])[0] == []


def test_pairs_round_trip_through_jsonl(tmp_path):
    pairs = [Pair(make_traj(3, ()), make_traj(2, (), seed=1))]
    write_pairs(tmp_path / "p.jsonl", pairs)
    assert read_pairs(tmp_path / "p.jsonl") == pairs
    (tmp_path / "bad.jsonl").write_text('{"chosen": {}}\n')
    with pytest.raises(TrainError, match="bad.jsonl:1"):
        read_pairs(tmp_path / "bad.jsonl")


# -- the loss ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bigram():
    """A Llama without layers: a token's next-token distribution depends on that token only,
    so a change in an observation can reach the loss only through its own tokens."""
    from transformers import LlamaForCausalLM

    from eef.presets.model import preset_config
    tok = make_tokenizer("tiny")
    cfg = preset_config("test", tok)
    cfg.num_hidden_layers = 0
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval(), ChatFormat(tok)


def _loss(model, fmt, pair: Pair) -> torch.Tensor:
    enc, kept = encode_pairs([pair], fmt, 4096)
    assert kept == [0]
    with torch.no_grad():
        c, r = side_logps(SequenceLogps(model), enc, fmt.tokenizer.pad_token_id)
    return dpo_loss(c, r, torch.tensor([-50.0]), torch.tensor([-60.0]), 0.1)


def test_dpo_loss_counts_action_tokens_only(bigram):
    model, fmt = bigram
    chosen, rejected = make_traj(4, (), seed=1), make_traj(4, (), seed=2)
    base = _loss(model, fmt, Pair(chosen, rejected))
    for side in ("chosen", "rejected"):
        p = Pair(make_traj(4, (), seed=1), make_traj(4, (), seed=2))
        t = getattr(p, side)
        t.steps[1].observation = t.steps[1].observation.replace("[SEP]", "[SEP] green shirt", 1)
        t.initial_observation += " red dress"
        assert torch.equal(_loss(model, fmt, p), base)  # observations: not in the loss
        t.steps[2].action = "click[B09QKP7XQM]" if t.steps[2].action != "click[B09QKP7XQM]" \
            else "click[B06Y3VLDFB]"
        assert not torch.equal(_loss(model, fmt, p), base)  # an action: in the loss
    # an untrained step of a side is not counted either (the SFT mask of Step.train)
    p = Pair(make_traj(4, (), seed=1), make_traj(4, (2,), seed=2))
    q = Pair(make_traj(4, (), seed=1), make_traj(4, (2,), seed=2))
    q.rejected.steps[2].action = "search[red shoes]"
    assert torch.equal(_loss(model, fmt, p), _loss(model, fmt, q))


def test_side_logps_sum_the_windows_of_a_side(bigram):
    model, fmt = bigram
    pair = Pair(make_traj(6, (), obs_words=30, seed=3), make_traj(2, (), seed=4))
    (whole,), _ = encode_pairs([pair], fmt, 4096)
    (cut,), _ = encode_pairs([pair], fmt, 160)
    assert len(whole.chosen) == 1 and len(cut.chosen) > 1  # several context windows
    mod, pad = SequenceLogps(model), fmt.tokenizer.pad_token_id
    with torch.no_grad():
        a, b = side_logps(mod, [whole], pad), side_logps(mod, [cut], pad)
    # a bigram model sees no context, so the windows add up to the whole trajectory
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])
    with torch.no_grad():
        logits = model(torch.tensor([whole.chosen[0].input_ids])).logits[0, :-1].log_softmax(-1)
    ids, mask = whole.chosen[0].input_ids, whole.chosen[0].mask
    manual = sum(float(logits[i - 1, ids[i]]) for i in range(1, len(ids)) if mask[i])
    assert float(a[0][0]) == pytest.approx(manual, rel=1e-5)


# -- the trainer ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir():
    return cached_dir("preset", tiny_model_dir)


def colour_pairs(n: int) -> list[Pair]:
    """Chosen: click the colour of the instruction; rejected: click another one."""
    out = []
    for t in copy_task(n):
        c = t.steps[1].action[len("click["):-1]
        bad = Trajectory(**{**t.__dict__, "steps": [t.steps[0], Step("click[pink]" if c != "pink"
                                                                     else "click[red]", "done")],
                            "reward": 0.0, "success": False})
        out.append(Pair(t, bad))
    return out


@pytest.mark.slow
def test_dpo_raises_the_margin_reproducibly_and_resumes(model_dir, tmp_path):
    cfg = TrainConfig(lr=3e-3, max_steps=6, batch_size=8, save_every=2, warmup_ratio=0.0)
    pairs = colour_pairs(24)
    a = train_dpo(str(model_dir), pairs, tmp_path / "a", cfg, beta=0.5, progress=False)
    assert a["pairs"] == 24 and a["skipped_pairs"] == 0 and len(a["losses"]) == 6
    assert a["losses"][0] == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(0.)).item(),
                                           abs=1e-4)  # the policy starts as its reference
    assert a["losses"][-1] < a["losses"][0] and a["margins"][-1] > 0
    part = train_dpo(str(model_dir), pairs, tmp_path / "b", cfg, beta=0.5, progress=False,
                     stop_after=3)
    assert part["steps"] == 3 and (tmp_path / "b" / "checkpoint").is_dir()
    b = train_dpo(str(model_dir), pairs, tmp_path / "b", cfg, beta=0.5, progress=False)
    assert b["losses"] == a["losses"] and not (tmp_path / "b" / "checkpoint").exists()
    assert json.loads((tmp_path / "a" / "eef_train.json").read_text())["beta"] == 0.5
    with pytest.raises(TrainError, match="other pairs, beta"):
        train_dpo(str(model_dir), pairs, tmp_path / "c", cfg, beta=0.5, progress=False,
                  stop_after=2)
        train_dpo(str(model_dir), pairs, tmp_path / "c", cfg, beta=0.2, progress=False)


@pytest.mark.slow
def test_dpo_goes_on_training_a_lora_adapter(model_dir, tmp_path):
    from eef.policy import Sampling, load_policy
    lora = TrainConfig(lr=1e-2, max_steps=2, batch_size=8, lora_r=4)
    train_sft(str(model_dir), copy_task(8), tmp_path / "sft", lora, progress=False)
    r = train_dpo(str(tmp_path / "sft"), colour_pairs(8), tmp_path / "dpo", lora,
                  reference=str(tmp_path / "sft"), progress=False)
    assert r["losses"][0] == pytest.approx(0.6931, abs=1e-3)  # starts at its reference
    cfg = json.loads((tmp_path / "dpo" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(model_dir)
    pol = load_policy(f"hf:{tmp_path / 'dpo'}")
    assert isinstance(pol.act([make_traj(1)], Sampling(max_new_tokens=4))[0], str)


def test_dpo_bad_input(model_dir, tmp_path):
    cfg = TrainConfig(max_steps=1)
    with pytest.raises(TrainError, match="no preference pair"):
        train_dpo(str(model_dir), [], tmp_path / "a", cfg, progress=False)
    with pytest.raises(TrainError, match="beta"):
        train_dpo(str(model_dir), colour_pairs(2), tmp_path / "a", cfg, beta=0, progress=False)
    untrained = [Pair(make_traj(2, (0, 1)), make_traj(2, ()))]
    with pytest.raises(TrainError, match="counted token on both sides"):
        train_dpo(str(model_dir), untrained, tmp_path / "a", cfg, progress=False)
    for bad in (DPOConfig(beta=0), DPOConfig(reference="base"), DPOConfig(schedule="linear"),
                DPOConfig(warmup_ratio=1.0)):
        with pytest.raises(ValueError):
            bad.check()
    got = DPOConfig(lr=None).train_config(TrainConfig(lr=1e-3, max_steps=50))
    assert got.lr == pytest.approx(5e-5) and got.max_steps == 0 and got.schedule == "constant"


# -- end to end -------------------------------------------------------------------------------
def _small(*more: str) -> list[str]:
    from test_pipeline import SMALL
    return [x for s in SMALL + list(more) for x in ("--set", s)]


@pytest.mark.needs_data
@pytest.mark.slow
def test_eto_iteration_end_to_end_and_resume_after_kill_9(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_pipeline import _eef, _evals, _metrics

    from eef.trajectory import read_jsonl
    args = _small("method.name=eto", "env.options={max_steps: 8}")
    clean = tmp_path / "clean"
    r = _eef(["run", TINY, "--out", str(clean), *args], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {x["stage"]: x for x in _metrics(clean)}
    assert set(_evals(clean)) == {"expert", "eval/sft", "eval/eto/it1"}
    budget = rows["eto/it1/budget"]
    experts = read_jsonl(clean / "expert.jsonl")
    solved = {t.task_id for t in experts if t.success}
    s0 = read_jsonl(clean / "rollouts/eto/it1/s0.jsonl")
    # one rollout per task the expert solved, counted like RFT's
    assert sorted(t.task_id for t in s0) == sorted(solved)
    assert budget["budget"]["env_steps"] == sum(len(t) for t in s0) > 0
    pairs = read_pairs(clean / "data/eto/it1.pairs.jsonl") if budget["pairs"] else []
    assert [(p.chosen.actions, p.rejected.actions) for p in pairs] == \
        [(p.chosen.actions, p.rejected.actions) for p in eto_pairs(experts, s0)[0]]
    assert budget["pairs"] == len(pairs) == budget["lose"] + budget["win"]
    if pairs:  # the test preset's random model fails where the expert succeeds
        assert rows["train/eto/it1"]["pairs"] == len(pairs)
        saved = json.loads((clean / "models/eto/it1/eef_train.json").read_text())
        assert saved["method"] == "dpo" and saved["reference"].endswith("models/sft")

    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "eef.cli", "run", TINY, "--out", str(killed), *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (killed / "stages/rollout__eto__it1__s0.json").exists():
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)  # in the DPO stage or right before it
    p.wait()
    r = _eef(["run", TINY, "--out", str(killed), *args], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _evals(killed) == _evals(clean)
    if pairs:  # the same pairs (episodes' wall times aside)
        def view(ps):
            return [(p.task_id, p.chosen.actions, p.rejected.actions, p.chosen.reward,
                     p.rejected.reward) for p in ps]
        assert view(read_pairs(killed / "data/eto/it1.pairs.jsonl")) == view(pairs)


@pytest.mark.needs_data
@pytest.mark.timeout(1800)  # six methods: slow when the machine is shared
@pytest.mark.slow
def test_compare_runs_and_reports_all_six_methods(tmp_path):
    import time

    from test_pipeline import _eef, _metrics
    from test_report import QUIET, find_table

    from eef.algorithms.pipeline import METHODS, method_budget
    from eef.report.html import build_report
    from eef.trajectory import read_jsonl
    out = tmp_path / "cmp"
    args = ["compare", TINY, "--methods", ",".join(METHODS), "--seeds", "1", "--out", str(out),
            *_small()]
    r = _eef(args, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads((out / "results.json").read_text())
    assert [row["method"] for row in table] == ["eef", "sft", "sft_all", "rft", "rft_xn", "eto",
                                                "expert"]
    by = {row["method"]: row for row in table}
    assert by["sft"]["env_steps_mean"] == by["sft_all"]["env_steps_mean"] == 0
    rows = _metrics(out / "seed0")
    assert by["eto"]["env_steps_mean"] == method_budget(rows, "eto")["env_steps"] > 0
    experts = read_jsonl(out / "seed0/expert.jsonl")
    assert read_jsonl(out / "seed0/data/sft_all.jsonl") == experts  # failures included
    assert any(not t.success for t in experts)
    # resumes: a rerun recomputes nothing
    before = {q.name: q.stat().st_mtime for q in (out / "seed0/stages").iterdir()}
    t0 = time.time()
    r = _eef(args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {q.name: q.stat().st_mtime for q in (out / "seed0/stages").iterdir()} == before
    assert time.time() - t0 < 120
    # the report lists the new methods with their counted budgets
    html = build_report([out], tmp_path / "report.html", QUIET).read_text(encoding="utf-8")
    its = {(x["method"], x["iteration"]): x for x in find_table(html, "method", "iteration", "runs")}
    assert ("sft_all", "0") in its and ("eto", "1") in its
    steps = method_budget(rows, "eto")["env_steps"]
    assert its[("eto", "1")]["policy env steps (cum.)"] == f"{steps:,.0f}"
    summary = [x["method"] for x in find_table(html, "method", "split", "runs", "episodes")]
    assert {"sft_all", "eto"} <= set(summary)
