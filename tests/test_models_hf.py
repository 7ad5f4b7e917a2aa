"""The hf: backend, the tiny/test presets, the batched KV-cache decoder and SFT training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from eef.errors import ModelMismatchError, ModelNotFoundError
from eef.models.decode import DecodeStats, PrefixCache, decode
from eef.models.format import EmptyMaskError
from eef.models.hf import HFPolicy
from eef.models.hparams import TrainConfig
from eef.models.train import TrainError, train_sft
from eef.policy import PolicySpecError, Sampling, load_policy
from eef.presets import PRESETS, PresetError, init_preset, preset_config
from eef.trajectory import Step, Trajectory, write_jsonl
from test_models_util import cached_dir, copy_task, corpus, make_traj, tiny_model_dir


def fixed_task(n: int) -> list[Trajectory]:
    """Always the same two turns: learnable in a few dozen steps by the test preset."""
    out = []
    for i, t in enumerate(copy_task(n)):
        t.steps = [Step("search[shoes]", "results [SEP] A1 [SEP] B2", "I search"),
                   Step("click[buy now]", "done", "")]
        out.append(t)
    return out


@pytest.fixture(scope="module")
def model_dir():
    return cached_dir("preset", tiny_model_dir)


@pytest.fixture(scope="module")
def policy(model_dir) -> HFPolicy:
    return load_policy(f"hf:{model_dir}")


@pytest.fixture(scope="module")
def trained_dir(model_dir):
    return cached_dir("sft", lambda out: train_sft(
        str(model_dir), fixed_task(64), out,
        TrainConfig(lr=1e-2, max_steps=40, batch_size=16, warmup_ratio=0.1), progress=False))


# -- presets ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_preset_directory_is_a_plain_hf_model(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert m.config.model_type == "llama" and m.config.vocab_size == len(tok)
    assert tok.chat_template and tok.eos_token == "<|end|>"
    info = json.loads((model_dir / "eef_preset.json").read_text())
    assert info["preset"] == "test" and info["tokenizer_corpus"]["texts"] > 0


@pytest.mark.slow
def test_tiny_preset_size():
    class Tok:
        pad_token_id, eos_token_id = 0, 1

        def __len__(self):
            return PRESETS["tiny"].vocab_size
    from transformers import LlamaForCausalLM
    with torch.device("meta"):
        m = LlamaForCausalLM(preset_config("tiny", Tok()))
    n = sum(p.numel() for p in m.parameters())
    assert 3_500_000 < n < 6_000_000  # "a few million parameters"


def test_unknown_preset_and_env(tmp_path):
    with pytest.raises(PresetError, match="unknown preset"):
        init_preset("huge", None, tmp_path, texts=["a"])
    with pytest.raises(PresetError, match="no text corpus"):
        init_preset("test", "nosuchenv", tmp_path)
    with pytest.raises(PresetError, match="empty corpus"):
        init_preset("test", None, tmp_path, texts=[])


# -- decoding --------------------------------------------------------------------------------
@pytest.mark.slow
def test_fast_decode_equals_generate_greedy(policy):
    model = policy.model
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (20, 33, 7, 33)]
    fast = decode(model, prompts, max_new_tokens=12, fast=True)
    loop = decode(model, prompts, max_new_tokens=12, fast=False)
    P = max(map(len, prompts))
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        att[i, P - len(p):] = 1
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=12,
                             min_new_tokens=12, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[:, P:].tolist()
    assert fast == ref and loop == ref


@pytest.mark.slow
def test_prefix_cache_reuses_earlier_turns_with_the_same_outputs(policy):
    """A prompt that extends an earlier sequence prefills only its new part: same logits
    (greedy tokens) as a full prefill, in batches mixing hits, partial hits and misses."""
    model = policy.model
    g = torch.Generator().manual_seed(1)
    turn1 = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (40, 57, 35)]
    cache, st = PrefixCache(min_tokens=8), DecodeStats()
    first = decode(model, turn1, max_new_tokens=6, fast=True, prefix_cache=cache, stats=st)
    assert st.reused_tokens == 0 and len(cache.entries) == 3
    obs = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (9, 21, 4)]
    turn2 = [p + o[:-1] + x for p, o, x in zip(turn1, first, obs)]  # prompt + answer fed + new
    turn2[2] = turn1[2][:20] + obs[2]  # diverges after 20 tokens: a partial hit
    turn2.append(torch.randint(5, 300, (30,), generator=g).tolist())  # unrelated: a miss
    want = decode(model, turn2, max_new_tokens=8, fast=True)
    got = decode(model, turn2, max_new_tokens=8, fast=True, prefix_cache=cache, stats=st)
    assert got == want
    assert st.reused_tokens == len(turn1[0]) + 5 + len(turn1[1]) + 5 + 20
    # the first logits agree closely, not just the argmax
    from eef.models.decode import _FastLoop
    hits = [cache.lookup(p) for p in turn2]
    ids = torch.zeros(len(turn2), max(map(len, turn2)), dtype=torch.long)
    pad = torch.tensor([ids.shape[1] - len(p) for p in turn2])
    for i, p in enumerate(turn2):
        ids[i, pad[i]:] = torch.tensor(p)
    with torch.inference_mode():
        a = _FastLoop(model, ids.clone(), pad, 4, 16, hits).first()
        b = _FastLoop(model, ids.clone(), pad, 4, 16).first()
    assert torch.allclose(a, b, atol=1e-4)
    # a budget too small for one sequence keeps nothing; clear() empties it
    tiny = PrefixCache(max_bytes=1000, min_tokens=8)
    decode(model, turn1, max_new_tokens=3, fast=True, prefix_cache=tiny)
    assert not tiny.entries and tiny.bytes == 0
    cache.clear()
    assert not cache.entries and cache.lookup(turn2[0]) == (0, None)


@pytest.mark.slow
def test_policy_turns_reuse_the_cache(policy):
    """Through the policy: the second turn of a conversation reuses the first's keys/values
    and answers as a policy without the cache."""
    from eef.models.hf import HFPolicy
    plain = HFPolicy(policy.model, policy.tokenizer, prefix_cache_mb=0)
    cached = HFPolicy(policy.model, policy.tokenizer)
    s = Sampling(max_new_tokens=10)
    trajs = [make_traj(3, seed=k) for k in range(3)]
    for k in range(1, 4):
        ctx = [t.prefix(k) for t in trajs]
        assert cached.act(ctx, s) == plain.act(ctx, s)
    assert plain.prefix_cache is None and cached.stats.reused_tokens > 0
    assert cached.stats.reused_tokens > cached.stats.prompt_tokens / 3


@pytest.mark.slow
def test_decode_stops_rows_independently(policy):
    prompts = [[5, 6, 7], [8, 9, 10, 11]]
    free = decode(policy.model, prompts, max_new_tokens=6)
    stop_tok = free[0][2]
    out = decode(policy.model, prompts, max_new_tokens=6, stop_ids=[stop_tok])
    for o, f in zip(out, free):
        assert o == (f[:f.index(stop_tok) + 1] if stop_tok in f else f)
    calls = []
    out = decode(policy.model, prompts, max_new_tokens=6,
                 stop_check=lambda r, ids: calls.append(r) or (r == 1 and len(ids) == 2))
    assert len(out[1]) == 2 and len(out[0]) == 6


@pytest.mark.slow
def test_sampling_is_seeded_per_row(policy):
    trajs = [make_traj(1, seed=i) for i in range(3)]
    s = Sampling(temperature=1.0, max_new_tokens=16)
    a = policy.act(trajs, s, seeds=[1, 2, 3])
    b = policy.act(trajs[::-1], s, seeds=[3, 2, 1])[::-1]
    c = policy.act([trajs[1]], s, seeds=[2])
    assert a == b and a[1] == c[0]
    assert policy.act(trajs, s, seeds=[4, 5, 6]) != a


@pytest.mark.slow
def test_greedy_batch_equals_one_by_one(policy):
    trajs = [make_traj(k, seed=k) for k in range(4)]
    s = Sampling(max_new_tokens=10)
    assert policy.act(trajs, s) == [policy.act([t], s)[0] for t in trajs]


# -- training --------------------------------------------------------------------------------
@pytest.mark.slow
def test_sft_learns_the_turns_and_act_stops_after_the_action(trained_dir):
    pol = load_policy(f"hf:{trained_dir}")
    ctx = fixed_task(3)
    out = pol.act([ctx[0].prefix(0), ctx[1].prefix(1)], Sampling(max_new_tokens=40))
    # the preset tokenizer reads text lower-cased, so its model writes lower case
    assert out == ["thought: i search\naction: search[shoes]", "action: click[buy now]"]
    log = [json.loads(x) for x in (trained_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.2 * log[0]["loss"]
    saved = json.loads((trained_dir / "eef_train.json").read_text())
    assert saved["config"]["lr"] == 1e-2 and saved["examples"] == 64


@pytest.mark.slow
def test_turn_decision_probe_sees_what_training_taught(trained_dir, policy):
    # eef.models.decisions: P(the turn's first word) in the agent's own prompt
    from eef.models.decisions import decision_scores, decision_summary, summarize
    trajs = fixed_task(2)
    trained = decision_scores(load_policy(f"hf:{trained_dir}"), trajs, max_context=256,
                              max_new_tokens=40)
    base = decision_scores(policy, trajs, max_context=256, max_new_tokens=40)
    # one record per trained turn: the thought's first word, or the action's in a turn
    # without a thought
    assert [(r["turn"], r["word"]) for r in trained] == [(0, "i"), (1, "click")] * 2
    assert all(r["argmax"] and r["p"] > 0.9 for r in trained)
    assert all(b["p"] < 0.5 * t["p"] for b, t in zip(base, trained) if t["turn"] == 0)
    row = summarize(trained, lambda r: r["turn"])[0]
    assert row["turns"] == 2 and row["argmax"] == 1.0 and row["nll"] < base[0]["nll"]
    # a masked turn is not a trained decision; turns_per_trajectory caps each trajectory
    trajs[0].steps[0].train = False
    some = decision_scores(policy, trajs, 256, 40, turns_per_trajectory=1)
    assert [(r["turn"], r["word"]) for r in some] == [(1, "click"), (0, "i")]
    fig = decision_summary(trained)
    assert fig["turns"] == 4 and fig["first_turn_argmax"] == 1.0 == fig["later_argmax"]
    assert decision_summary([])["first_turn_p"] is None


@pytest.mark.slow
def test_a_failing_decision_probe_never_undoes_the_training(model_dir, tmp_path, monkeypatch):
    import eef.models.decisions as decisions

    def broken(*a, **k):
        raise ValueError("cannot split this turn")
    monkeypatch.setattr(decisions, "probe_model", broken)
    cfg = TrainConfig(lr=3e-3, max_steps=2, batch_size=8)
    with pytest.warns(UserWarning, match="decision probe failed"):
        res = train_sft(str(model_dir), copy_task(16), tmp_path / "m", cfg, progress=False)
    assert res["decisions"] == {"error": "cannot split this turn"} and res["steps"] == 2
    assert (tmp_path / "m" / "config.json").exists()
    assert not (tmp_path / "m" / "decisions.json").exists()


@pytest.mark.slow
def test_cut_note_is_saved_with_the_model_and_read_by_its_policy(model_dir, tmp_path):
    from eef.models.format import DEFAULT_CUT_NOTE, FORMAT_FILE
    cfg = TrainConfig(lr=3e-3, max_steps=2, batch_size=8, cut_note=True, decision_probe=0)
    train_sft(str(model_dir), copy_task(16), tmp_path / "m", cfg, progress=False)
    assert json.loads((tmp_path / "m" / FORMAT_FILE).read_text()) == {
        "cut_note": DEFAULT_CUT_NOTE}
    pol = load_policy(f"hf:{tmp_path / 'm'}")
    assert pol.format.cut_note == DEFAULT_CUT_NOTE and pol.format.aliases is None
    train_sft(str(model_dir), copy_task(16), tmp_path / "n", replace(cfg, cut_note="(cut)"),
              progress=False)
    assert load_policy(f"hf:{tmp_path / 'n'}").format.cut_note == "(cut)"
    # a model trained from it without the option keeps its note (its format is its data's)
    train_sft(str(tmp_path / "n"), copy_task(16), tmp_path / "o", replace(cfg, cut_note=None),
              progress=False)
    assert load_policy(f"hf:{tmp_path / 'o'}").format.cut_note == "(cut)"


@pytest.mark.slow
def test_decision_weight_teaches_the_decision_token_faster(model_dir, tmp_path):
    """Same data, steps and seed: weight 8 on the decision tokens (``I`` of the first turn,
    ``click`` of the thoughtless second) leaves them more probable than Eq. 1's weight 1,
    and the setting is part of the run's key only when it is not 1."""
    from eef.models.decisions import decision_scores
    data = fixed_task(32)
    p = {}
    for w in (1.0, 8.0):
        cfg = TrainConfig(lr=1e-2, max_steps=12, batch_size=8, decision_weight=w,
                          decision_probe=0)
        train_sft(str(model_dir), data, tmp_path / f"w{w}", cfg, progress=False)
        recs = decision_scores(load_policy(f"hf:{tmp_path / f'w{w}'}"), data[:2], 256, 40)
        p[w] = sum(r["p"] for r in recs) / len(recs)
    assert p[8.0] > 2 * p[1.0] and p[8.0] > p[1.0] + 0.1, p  # measured: 0.27 vs 0.08
    assert "decision_weight" not in TrainConfig().key()
    assert TrainConfig(decision_weight=8.0).key()["decision_weight"] == 8.0


@pytest.mark.slow
def test_sft_is_reproducible_and_resumes(model_dir, tmp_path, monkeypatch):
    cfg = TrainConfig(lr=3e-3, max_steps=6, batch_size=8, save_every=2)
    data = copy_task(40)
    a = train_sft(str(model_dir), data, tmp_path / "a", cfg, progress=False)
    part = train_sft(str(model_dir), data, tmp_path / "b", cfg, progress=False, stop_after=3)
    assert part["steps"] == 3 and (tmp_path / "b" / "checkpoint").is_dir()
    b = train_sft(str(model_dir), data, tmp_path / "b", cfg, progress=False)
    assert a["losses"] == b["losses"] and len(a["losses"]) == 6
    assert not (tmp_path / "b" / "checkpoint").exists()
    # the decision probe of the saved model: only at the end, not part of the run's config
    assert "decisions" not in part and a["decisions"] == b["decisions"]
    assert a["decisions"]["turns"] > 0 and 0 <= a["decisions"]["first_turn_p"] <= 1
    saved = json.loads((tmp_path / "a" / "decisions.json").read_text())
    assert saved["by_word"] and saved["turns"] == a["decisions"]["turns"]
    d = train_sft(str(model_dir), data, tmp_path / "d", replace(cfg, decision_probe=0),
                  progress=False, stop_after=2)
    # the memory release every trim_every steps changes nothing in the run, so a run stopped
    # under one setting resumes under another with the same losses
    import eef.models.train as train_mod
    calls = []
    monkeypatch.setattr(train_mod, "release", lambda: calls.append(1) or {})
    d = train_sft(str(model_dir), data, tmp_path / "d", replace(cfg, trim_every=3),
                  progress=False)
    assert d["losses"] == a["losses"] and d["decisions"] == a["decisions"]
    assert len(calls) == 2  # steps 3 and 6 of the 4 the resumed run took (3..6)
    calls.clear()
    train_sft(str(model_dir), data[:8], tmp_path / "e", replace(cfg, trim_every=0),
              progress=False)
    assert calls == []
    assert TrainConfig(trim_every=0).key() == TrainConfig().key()
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="trim_every"):
            TrainConfig(trim_every=bad).check()
    with pytest.raises(TrainError, match="different config"):
        train_sft(str(model_dir), data, tmp_path / "c", cfg, progress=False, stop_after=1)
        train_sft(str(model_dir), data, tmp_path / "c", TrainConfig(lr=1.0, max_steps=6,
                  batch_size=8, save_every=2), progress=False)


@pytest.mark.slow
def test_lora_adapter_loads_through_hf_spec(model_dir, tmp_path):
    path = tmp_path / "trajs.jsonl"
    write_jsonl(path, fixed_task(16))
    r = train_sft(str(model_dir), path, tmp_path / "lora",
                  TrainConfig(lr=1e-2, max_steps=3, batch_size=8, lora_r=4), progress=False)
    assert (tmp_path / "lora" / "adapter_config.json").exists() and len(r["losses"]) == 3
    pol = load_policy(f"hf:{tmp_path / 'lora'}")
    # hf:ADAPTER is the base model with the trained low-rank update merged in
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    want = PeftModel.from_pretrained(base, tmp_path / "lora").merge_and_unload().state_dict()
    got = pol.model.state_dict()
    assert set(got) == set(want)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    changed = [k for k in want if not torch.equal(want[k], before[k])]
    assert changed and all("proj" in k for k in changed)  # the adapted projections only
    ctx = [make_traj(1)]
    out = pol.act(ctx, Sampling(max_new_tokens=4))
    assert len(out) == 1 and out == pol.act(ctx, Sampling(max_new_tokens=4))  # greedy: stable


@pytest.mark.slow
def test_sft_continues_a_lora_adapter(model_dir, tmp_path):
    """method.train_from: continue with LoRA: the next stage trains the same adapter further
    over the same frozen base (no adapter stacked on an adapter)."""
    import json as _json

    from safetensors.torch import load_file
    path = tmp_path / "trajs.jsonl"
    write_jsonl(path, fixed_task(16))
    cfg = TrainConfig(lr=1e-2, max_steps=2, batch_size=8, lora_r=4)
    train_sft(str(model_dir), path, tmp_path / "it0", cfg, progress=False)
    r = train_sft(str(tmp_path / "it0"), path, tmp_path / "it1", cfg, progress=False)
    assert len(r["losses"]) == 2
    a0, a1 = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("it0", "it1"))
    assert set(a0) == set(a1) and any(not torch.equal(a0[k], a1[k]) for k in a0)
    base = _json.loads((tmp_path / "it1" / "adapter_config.json").read_text())
    assert base["base_model_name_or_path"] == str(model_dir) and base["r"] == 4
    assert load_policy(f"hf:{tmp_path / 'it1'}").act([make_traj(1)], Sampling(max_new_tokens=4))


# -- bad input -------------------------------------------------------------------------------
def test_bad_specs_and_paths(tmp_path, model_dir):
    with pytest.raises(PolicySpecError, match="unknown scheme"):
        load_policy("gguf:model")
    with pytest.raises(PolicySpecError, match="bad policy spec"):
        load_policy("hf:")
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        load_policy(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_policy(f"hf:{tmp_path / 'empty'}")


def test_tokenizer_model_mismatch(tmp_path, model_dir):
    import shutil
    from eef.presets import train_tokenizer
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    train_tokenizer(corpus() * 3, 900).save_pretrained(bad)
    with pytest.raises(ModelMismatchError, match="embedding table"):
        load_policy(f"hf:{bad}")


def test_training_bad_input(model_dir, tmp_path):
    with pytest.raises(TrainError, match="empty dataset"):
        train_sft(str(model_dir), [], tmp_path / "x", progress=False)
    with pytest.raises(EmptyMaskError, match="no trained token"):
        train_sft(str(model_dir), [make_traj(2, untrained=(0, 1))], tmp_path / "y",
                  progress=False)
    for bad in ({"decision_weight": -1.0}, {"decision_weight": float("nan")},
                {"decision_probe": -2}):
        with pytest.raises(TrainError, match=next(iter(bad))):
            train_sft(str(model_dir), [make_traj(2)], tmp_path / "z", TrainConfig(**bad),
                      progress=False)
        assert not (tmp_path / "z").exists()  # nothing written
    from eef.algorithms.config import ConfigError, ExperimentConfig, from_dict, validate
    with pytest.raises(ConfigError, match="train.decision_weight"):
        validate(from_dict(ExperimentConfig, {"train": {"decision_weight": -0.5}}))


def test_decode_stats_and_prompt_budget(policy):
    with pytest.raises(ValueError, match="no room"):
        policy.act([make_traj(1)], Sampling(max_new_tokens=policy.max_context))
    st = DecodeStats()
    decode(policy.model, [[5, 6]], max_new_tokens=3, stats=st)
    assert st.new_tokens == 3 and st.prompt_tokens == 2


def test_padded_batch_loss_equals_per_sequence_losses(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eef.models.format import ChatFormat, build_examples
    from eef.models.train import MaskedLMLoss, micro_batches
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    exs, _ = build_examples([make_traj(k + 1, untrained=(), seed=k) for k in range(3)],
                            ChatFormat(tok), 4096)
    lm = MaskedLMLoss(model)
    with torch.no_grad():
        (batch,) = micro_batches(exs, [0, 1, 2], 10**6, int(tok.pad_token_id))
        assert (batch[1] == 0).any()  # really padded
        total, n = lm(*batch)
        parts = [lm(*micro_batches(exs, [i], 10**6, 0)[0]) for i in range(3)]
    assert int(n) == sum(int(p[1]) for p in parts) == sum(e.n_trained for e in exs)
    assert torch.allclose(total, sum(p[0] for p in parts), rtol=1e-4)
    # decision weights: weight w on each trained turn's decision token, 1 elsewhere
    from eef.models.train import decision_weights, pad_examples
    ids, att, lab = pad_examples(exs, int(tok.pad_token_id))
    with torch.no_grad():
        ce, sel = lm.token_losses(ids, att, lab)
        dec = torch.tensor([[d for d in e.decision] + [0] * (ids.shape[1] - len(e.decision))
                            for e in exs])[:, 1:][sel].bool()
        assert int(dec.sum()) == sum(len(e.steps) for e in exs)
        assert torch.allclose(lm(ids, att, lab, decision_weights(exs, 1.0))[0], total, rtol=1e-4)
        w5, n5 = lm(ids, att, lab, decision_weights(exs, 5.0))
    assert int(n5) == int(n)
    assert torch.allclose(w5, ce.sum() + 4 * ce[dec].sum(), rtol=1e-4)


@pytest.mark.slow
def test_sft_with_id_aliases_clicks_unseen_identifiers(model_dir, tmp_path):
    """Trained to click the first hit with per-page aliases, the model clicks the first hit of
    pages whose identifiers it never saw; the trained model keeps the format."""
    import random as _random

    from eef.models.format import FORMAT_FILE, IdAliases

    rng = _random.Random(0)

    def asin() -> str:
        return "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))

    def task(i: int) -> Trajectory:
        hits = [asin() for _ in range(3)]
        page = "results [SEP] " + " [SEP] ".join(f"{h} [SEP] shoes [SEP] $1" for h in hits)
        return Trajectory(f"p{i}", "toy", "buy shoes", "Instruction: [SEP] buy shoes [SEP] Search",
                          [Step("search[shoes]", page, ""),
                           Step(f"click[{hits[0]}]", "item [SEP] Buy Now", "")], 1.0, True, True)

    out = tmp_path / "aliased"
    train_sft(str(model_dir), [task(i) for i in range(64)], out,
              TrainConfig(lr=1e-2, max_steps=40, batch_size=16, warmup_ratio=0.1,
                          id_aliases=True), progress=False)
    assert json.loads((out / FORMAT_FILE).read_text())["id_aliases"]["alias"] == "#{n}"
    pol = load_policy(f"hf:{out}")
    assert pol.format.aliases == IdAliases()
    unseen = [task(100 + i).prefix(1) for i in range(4)]
    got = pol.act(unseen, Sampling(max_new_tokens=16))
    firsts = [c.steps[0].observation.split(" [SEP] ")[1] for c in unseen]
    assert got == [f"action: click[{a}]" for a in firsts]
    # unset, the option stays out of the training key (keys recorded before it stay valid)
    from dataclasses import asdict
    assert TrainConfig().key() == {k: v for k, v in asdict(TrainConfig()).items()
                                   if k not in ("id_aliases", "cut_note", "decision_probe",
                                                "decision_weight", "trim_every")}
    assert TrainConfig(decision_probe=0).key() == TrainConfig().key()
    assert "id_aliases" not in TrainConfig().key() and TrainConfig(id_aliases=False).key()[
        "id_aliases"] is False
    from eef.algorithms.config import ConfigError, ExperimentConfig, from_dict
    assert from_dict(ExperimentConfig, {"train": {"id_aliases": True}}).train.id_aliases is True
    with pytest.raises(ConfigError, match="id_aliases"):
        from_dict(ExperimentConfig, {"train": {"id_aliases": "yes"}})
    assert "cut_note" not in TrainConfig().key() and TrainConfig(cut_note=True).key()[
        "cut_note"] is True
    for bad in ("", 3):
        with pytest.raises(ValueError, match="cut_note"):
            TrainConfig(cut_note=bad).check()
