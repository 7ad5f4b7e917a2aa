"""The preset build (eef.presets) and the WebShop curriculum on a very small budget: the 'test'
preset, a few dozen sequences, a few optimizer steps."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.needs_data

SMALL = dict(short_drills=8, short_replay=4, lookup_drills=8, warmup_steps=0, explore_episodes=4,
             pick_tasks=12, steps=3, batch_size=4, max_tokens=1000, max_hits=3, save_every=1)


@pytest.fixture(scope="module")
def env():
    from eef.envs.webshop import WebShopEnv
    return WebShopEnv()


@pytest.fixture(scope="module")
def corpus(env):
    from eef.presets.webshop import explore_transcripts, pick_tasks
    return (list(explore_transcripts(env, 25, seed=3, relabel=0.5)),
            list(pick_tasks(env, 60, seed=3, option_share=0.5, relabel=0.5)))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EEF_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _texts(t):
    yield t.instruction
    yield t.initial_observation
    for s in t.steps:
        yield s.action
        yield s.thought
        yield s.observation


def test_corpus_has_no_test_goal_and_no_score(env, corpus):
    test_ins = {t.instruction.lower() for t in env.tasks("test")}
    test_ins |= {t.instruction.lower() for t in env.tasks("all") if t.split is None}
    explore, picks = corpus
    assert explore and picks
    for t in explore + picks:
        for text in _texts(t):
            low = text.lower()
            assert "your score" not in low and "thank you for shopping" not in low
            assert not any(ins in low for ins in test_ins if ins)
        assert t.reward == 0.0 and not t.success
    train_ins = {t.instruction for t in env.tasks("train")}
    assert all(t.instruction in train_ins or t.source.extra.get("relabelled") for t in explore)
    # invalid random actions stay in the context but out of the loss
    assert all(s.train == s.valid for t in explore for s in t.steps)


def test_copy_targets_are_listed_train_products(env, corpus):
    from eef.experts.webshop import parse_page
    train = set(env.cat.split["train"])
    _, picks = corpus
    relabelled = 0
    for t in picks:
        search, click = t.steps[0], t.steps[1]
        assert not search.train and click.train
        listed = [h[0] for h in parse_page(search.observation)["hits"]]
        m = re.fullmatch(r"click\[(.+)\]", click.action)
        assert m and m.group(1) in listed, (click.action, listed)
        target = m.group(1)
        assert target in env.cat.products
        if t.source.extra.get("relabelled"):  # any catalogue ASIN, an arbitrary label
            relabelled += 1
        else:  # the named product is a train product
            assert target in train
            assert target in train
            title = env.cat.products[target]["Title"].lower()
            named = t.instruction.split(" with ")[0].split()[-1]
            assert named in title
        for s in t.steps[2:]:  # option clicks are values listed on the item page
            value = s.action[len("click["):-1]
            assert s.train and f" [SEP] {value} [SEP] " in t.steps[1].observation
    assert 0 < relabelled < len(picks)


def test_lookup_drills_copy_listed_identifiers(env):
    from eef.experts.webshop import parse_page
    from eef.presets.webshop import _words, lookup_drills
    train = set(env.cat.split["train"])
    drills = list(lookup_drills(env, 40, seed=2))
    assert len(drills) == 40
    titles = {p["Title"].lower() for a, p in env.cat.products.items() if a in train}
    for t in drills:
        search, click = t.steps
        assert not search.train and click.train
        hits = parse_page(search.observation)["hits"]
        assert 2 <= len(hits) <= 6
        # titles are the first words of train products' titles only
        assert all(any(tt.startswith(h[1].lower()) for tt in titles) for h in hits)
        ids = [h[0] for h in hits]
        assert set(ids) <= set(env.cat.products) and len(set(ids)) == len(ids)
        assert click.action[len("click["):-1] in ids
        # every lookup in the thought names a word of that hit's title, unique on the page
        for word, ident in re.findall(r"(.+?) is (\w{10})\. ?", click.thought):
            (hit,) = [h for h in hits if h[0] == ident]
            others = [h for h in hits if h[0] != ident]
            assert set(word.split()) <= set(_words(hit[1]))
            assert not any(set(word.split()) <= set(_words(o[1])) for o in others)
        named = t.instruction.split(", ")[0].split()[-1]  # the first word named is clicked
        assert click.thought.startswith(f"{named} is ") or f" {named} is " in click.thought
        assert click.thought.split(" is ")[1].split(".")[0] == click.action[len("click["):-1]
    # the identifiers are drawn at random: they do not follow the titles
    first = [t.steps[0].observation.split(" [SEP] ")[3] for t in drills]
    assert len(set(first)) > 30


def test_options_are_validated_and_key_changes(cache):
    from eef.presets import PretrainConfig, PretrainError, build_key, build_preset
    k1, _ = build_key("test", "webshop", PretrainConfig.from_options(SMALL))
    k2, _ = build_key("test", "webshop", PretrainConfig.from_options(SMALL))
    k3, _ = build_key("test", "webshop", PretrainConfig.from_options({**SMALL, "steps": 4}))
    k4, _ = build_key("tiny", "webshop", PretrainConfig.from_options(SMALL))
    assert k1 == k2 and len({k1, k3, k4}) == 3
    with pytest.raises(PretrainError, match="unknown preset option"):
        build_preset("test", "webshop", progress=False, bogus=1)
    with pytest.raises(PretrainError, match="warmup_steps"):
        build_preset("test", "webshop", progress=False, short_drills=0, warmup_steps=3)
    with pytest.raises(PretrainError, match="relabel"):
        build_preset("test", "webshop", progress=False, relabel=2.0)
    with pytest.raises(PretrainError, match="no pre-training corpus"):
        build_preset("test", "nowhere", progress=False)
    from eef.presets import PresetError
    with pytest.raises(PresetError, match="unknown preset 'huge'"):
        build_preset("huge", "webshop", progress=False)


@pytest.mark.slow
def test_build_is_cached_and_recorded(cache, monkeypatch):
    import eef.presets.build as P
    path = P.build_preset("test", "webshop", progress=False, **SMALL)
    assert path.parent == cache / "presets" and not path.with_name(path.name + ".tmp").exists()
    info = json.loads((path / P.INFO_FILE).read_text())
    pt = info["pretraining"]
    assert pt["steps"] == 3 and pt["tokens"] > 0 and pt["options"]["pick_tasks"] == 12
    assert pt["corpus"]["pick"]["sequences"] == 12 and pt["corpus"]["lookup"]["sequences"] == 8
    assert pt["corpus"]["explore"]["trained_actions"] > 0
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()

    def boom(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(P, "train_pretrain", boom)
    assert P.build_preset("test", "webshop", progress=False, **SMALL) == path
    with pytest.raises(AssertionError, match="trained again"):  # other options: a new build
        P.build_preset("test", "webshop", progress=False, **{**SMALL, "seed": 1})


@pytest.mark.slow
def test_interrupted_build_resumes(cache, tmp_path):
    import eef.presets.build as P
    out = tmp_path / "preset"
    opts = {**SMALL, "steps": 4, "warmup_steps": 2}
    with pytest.raises(P.BuildInterrupted, match="warmup"):
        P.build_preset("test", "webshop", out=out, progress=False, stop_after=1, **opts)
    work = out.with_name(out.name + ".tmp")
    assert not out.exists() and (work / "warmup" / "checkpoint").is_dir()
    corpus_before = (work / "corpus.jsonl").read_bytes()
    with pytest.raises(P.BuildInterrupted, match="model"):
        P.build_preset("test", "webshop", out=out, progress=False, stop_after=2, **opts)
    assert (work / "model" / "checkpoint").is_dir()
    assert (work / "warmup" / "eef_phase.json").exists()
    assert (work / "corpus.jsonl").read_bytes() == corpus_before  # written once, reused
    path = P.build_preset("test", "webshop", out=out, progress=False, **opts)
    assert path == out and not work.exists()

    def steps(log):
        return [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps(out / "train_log.jsonl") == [1, 2, 3, 4]  # continued, not restarted
    info = json.loads((out / P.INFO_FILE).read_text())["pretraining"]
    assert info["steps"] == 6 and info["warmup_steps"] == 2
    with pytest.raises(P.PretrainError, match="exists but is not this build"):
        P.build_preset("test", "webshop", out=out, progress=False, **SMALL)


@pytest.mark.slow
def test_warmup_is_shared_between_builds(cache, tmp_path):
    """Builds that differ only in their main phase reuse one warm-up; other warm-ups do not."""
    import torch
    from safetensors.torch import load_file

    import eef.presets.build as P
    opts = {**SMALL, "steps": 2, "warmup_steps": 2}
    a = P.build_preset("test", "webshop", out=tmp_path / "a", progress=False, **opts)
    assert not json.loads((a / P.INFO_FILE).read_text())["pretraining"]["warmup_reused"]
    stored = list((cache / "presets" / "warmup").iterdir())
    assert len(stored) == 1 and not list(stored[0].glob("checkpoint*"))
    b = P.build_preset("test", "webshop", out=tmp_path / "b", progress=False,
                       **{**opts, "pick_tasks": 10})
    info = json.loads((b / P.INFO_FILE).read_text())["pretraining"]
    assert info["warmup_reused"] and info["steps"] == 4
    c = P.build_preset("test", "webshop", out=tmp_path / "c", progress=False,
                       **{**opts, "pick_tasks": 10, "warmup_steps": 3})
    assert not json.loads((c / P.INFO_FILE).read_text())["pretraining"]["warmup_reused"]
    assert len(list((cache / "presets" / "warmup").iterdir())) == 2
    d = P.build_preset("test", "webshop", out=tmp_path / "d", progress=False, reuse_warmup=False,
                       **{**opts, "pick_tasks": 10})
    assert not json.loads((d / P.INFO_FILE).read_text())["pretraining"]["warmup_reused"]
    # same warm-up and main phase, run or reused: the same weights
    wb, wd = load_file(str(b / "model.safetensors")), load_file(str(d / "model.safetensors"))
    assert all(torch.equal(wb[k], wd[k]) for k in wb)


def test_search_drills_carry_the_train_instruction_into_the_query(env):
    from eef.experts.webshop import instruction_parts
    from eef.presets.webshop import search_drills
    drills = list(search_drills(env, 30, seed=2))
    assert len(drills) == 30
    train = {t.id: t for t in env.tasks("train")}
    for d in drills:
        goal = next(t for t in train.values() if t.instruction == d.instruction)
        assert goal.split == "train" and d.initial_observation == env.reset(goal.id)
        (step,) = d.steps
        assert step.train and step.action.startswith("search[") and step.action.endswith("]")
        words = step.action[7:-1].split()
        phrase = instruction_parts(goal.instruction)[0].lower()
        assert words and all(w in phrase for w in words) and "find" not in words
        assert "price" not in words and not step.observation  # no results page, no score
    assert [d.steps[0].action for d in search_drills(env, 30, seed=2)] == \
        [d.steps[0].action for d in drills]  # deterministic


def test_search_drills_key_and_replay(env):
    from eef.presets import PretrainConfig, PretrainError, build_key, replay_sequences
    k0, p0 = build_key("test", "webshop", PretrainConfig.from_options(SMALL))
    k1, p1 = build_key("test", "webshop", PretrainConfig.from_options({**SMALL, "search_drills": 0}))
    k2, p2 = build_key("test", "webshop", PretrainConfig.from_options({**SMALL, "search_drills": 5}))
    assert k0 == k1 != k2  # a build without search drills keeps its earlier key
    assert "search_drills" not in p0["options"] and p2["options"]["search_drills"] == 5
    opts = {**SMALL, "search_drills": 6}
    rep = replay_sequences("webshop", opts, 20, seed=1)
    assert len(rep) == 20 and all(t.source.kind == "pretrain" for t in rep)
    assert not any(t.source.extra.get("task") == "lookup_short" for t in rep)  # warm-up drills stay out
    assert [t.task_id for t in replay_sequences("webshop", opts, 20, seed=1)] == \
        [t.task_id for t in rep]
    assert len(replay_sequences("webshop", opts, 10_000, seed=1)) == 8 + 4 + 6 + 12  # all of it
    assert replay_sequences("webshop", opts, 0) == []
    with pytest.raises(PretrainError, match="no pre-training corpus"):
        replay_sequences("nowhere", opts, 3)


def test_copy_drills_copy_train_title_words_into_the_query(env):
    from eef.presets.webshop import copy_drills
    drills = list(copy_drills(env, 60, seed=4))
    assert len(drills) == 60
    train_titles = {env.cat.products[t.meta["asin"]]["Title"].lower() for t in env.tasks("train")}
    train_words = {w for t in train_titles for w in re.findall(r"[a-z][a-z'&-]*", t)}
    spans = 0
    for d in drills:
        (step,) = d.steps
        m = re.fullmatch(r"Find me (.+?)(, and price lower than \d+\.00 dollars)?", d.instruction)
        assert m, d.instruction
        text = m.group(1)
        assert step.train and step.action == f"search[find me {text}]"
        assert d.initial_observation == f"WebShop [SEP] Instruction: [SEP] {d.instruction} [SEP] Search"
        assert 2 <= len(text.split()) <= 14 or any(text == t for t in train_titles)
        assert all(w in train_words for w in text.split() if re.fullmatch(r"[a-z][a-z'&-]*", w))
        spans += any(text in t for t in train_titles)
        assert not step.observation and d.reward == 0.0  # no results page, no score
    assert 10 < spans < 60  # both kinds: title spans and random word strings
    assert [d.instruction for d in copy_drills(env, 60, seed=4)] == \
        [d.instruction for d in drills]  # deterministic
    assert [d.instruction for d in copy_drills(env, 60, seed=5)] != \
        [d.instruction for d in drills]


@pytest.mark.slow
def test_copy_drill_build_is_a_phase_on_the_cached_build(cache, tmp_path, monkeypatch):
    import eef.presets.build as P
    from eef.envs.webshop import WebShopEnv
    from eef.presets.webshop import copy_drills
    base_opts = {**SMALL, "steps": 2}
    kb, pb = P.build_key("test", "webshop", P.PretrainConfig.from_options(base_opts))
    k0, _ = P.build_key("test", "webshop", P.PretrainConfig.from_options(
        {**base_opts, "copy_drills": 0, "copy_lr": 1e-3}))
    kc, pc = P.build_key("test", "webshop", P.PretrainConfig.from_options(
        {**base_opts, "copy_drills": 8}))
    assert kb == k0 != kc and "copy_drills" not in pb["options"]  # earlier keys stay valid
    with pytest.raises(P.PretrainError, match="copy_lr"):
        P.PretrainConfig.from_options({**base_opts, "copy_lr": 0})
    with pytest.raises(P.PretrainError, match="copy_drills"):
        P.PretrainConfig.from_options({**base_opts, "copy_drills": -1})

    opts = {**base_opts, "copy_drills": 8, "warmup_batch_size": 4}
    out = tmp_path / "copy"
    with pytest.raises(P.BuildInterrupted, match="model"):  # the base build, first
        P.build_preset("test", "webshop", out=out, progress=False, stop_after=1, **opts)
    with pytest.raises(P.BuildInterrupted, match="copy drills"):
        P.build_preset("test", "webshop", out=out, progress=False, stop_after=1, **opts)
    base = P.preset_dir("test", "webshop", P.build_key(
        "test", "webshop", P.PretrainConfig.from_options({**opts, "copy_drills": 0}))[0])
    assert (base / P.INFO_FILE).exists()  # the build without copy drills, cached
    path = P.build_preset("test", "webshop", out=out, progress=False, **opts)  # resumes
    assert path == out and not out.with_name(out.name + ".tmp").exists()
    info = json.loads((out / P.INFO_FILE).read_text())["pretraining"]
    base_info = json.loads((base / P.INFO_FILE).read_text())["pretraining"]
    assert info["copy_phase"]["steps"] == 2 and info["copy_phase"]["sequences"] == 8
    assert info["steps"] == base_info["steps"] + 2 and info["corpus"]["copy"]["sequences"] == 8
    assert info["key"] == P.build_key("test", "webshop", P.PretrainConfig.from_options(opts))[0]
    assert info["base"] == base.name and "span-copy drills" in info["what"]
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] \
        == [1, 2]  # the copy phase continued after the interruption
    monkeypatch.setattr(P, "train_pretrain", lambda *a, **k: pytest.fail("trained again"))
    assert P.build_preset("test", "webshop", out=out, progress=False, **opts) == out
    rep = P.replay_sequences("webshop", opts, 5, seed=2)
    assert [t.source.extra["task"] for t in rep].count("copy") == 5 and len(rep) == 10
    assert [t.instruction for t in rep if t.source.extra["task"] == "copy"] == \
        [t.instruction for t in copy_drills(WebShopEnv(), 5, 3)]  # fresh: seeded seed + 1
    with pytest.raises(P.PretrainError, match="WebShop drills"):
        P.build_preset("test", "sciworld", out=tmp_path / "sw", progress=False, **opts)


def test_webshop_tokenizer_text():
    from eef.presets import webshop
    texts = list(webshop.texts())
    assert len(texts) > 1000 and any("B0" in t for t in texts)
    ids = webshop.identifiers()
    assert len(ids) == len(set(ids)) == 1000 and all(a == a.upper() for a in ids)
