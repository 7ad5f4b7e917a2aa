"""The ScienceWorld curriculum of the tiny preset (eef.presets.sciworld) and the object-copy
probe (benchmarks/probes/objects.py) on the real simulator: one JVM for the module, small
corpora."""

import random
import re

import pytest

from eef.envs.sciworld import NO_ACTION, SciWorldEnv, available
from eef.presets import PretrainConfig, PretrainError
from eef.presets.sciworld import (OUTCOME, RoomView, listed_objects, lookup_drills, naming_words,
                                  random_action, train_only_pairs)
from eef.presets.sciworld import corpus as sciworld_corpus
from eef.presets.sciworld import identifiers as sciworld_identifiers
from eef.presets.sciworld import texts as sciworld_texts
from probes import ProbeError
from probes.objects import (ObjectPage, corpus_names, evaluate_object_copies,
                            sciworld_object_pages)
from eef.trajectory import Trajectory

pytestmark = [pytest.mark.java, pytest.mark.needs_data, pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="no Java runtime for ScienceWorld")]

LOOK = """This room is called the workshop. In it, you see: 
\ta substance called air
\ta table. On the table is: a battery, a black wire, a blue light bulb, which is off.
\ta ultra low temperature freezer. The ultra low temperature freezer door is closed. 
\tthe agent
You also see:
\tA door to the hallway (that is open)"""


class _Recording(SciWorldEnv):
    """The env, recording every variation it loads."""

    loaded: list

    def reset(self, task_id):
        self.loaded.append(task_id)
        return super().reset(task_id)


@pytest.fixture(scope="module")
def env():
    e = _Recording()
    e.loaded = []
    yield e
    e.close()


@pytest.fixture(scope="module")
def held_out(env):
    sp = env.splits()
    return {env.task_id(*p) for p in sp["dev"] + sp["test"]}


def _cfg(**options):
    return PretrainConfig.from_options(options)


@pytest.fixture(scope="module")
def cfg():
    return _cfg(short_drills=8, lookup_drills=16, pick_tasks=16, explore_episodes=3, seed=3)


@pytest.fixture(scope="module")
def corpus(env, cfg):
    env.loaded.clear()
    out = list(sciworld_corpus(cfg, env=env, progress=False))
    out and setattr(out[0], "_loaded", list(env.loaded))
    return out


@pytest.fixture(scope="module")
def texts(env):
    env.loaded.clear()
    out = list(sciworld_texts(env=env, variations_per_task=1, progress=False))
    return out, list(env.loaded)


# -- pure helpers (no simulator) -------------------------------------------------------------
def test_listed_objects_are_whole_words_of_the_listing():
    objs = ["agent", "battery", "blue light bulb", "light", "freezer", "hallway", "wire", "cup"]
    got = listed_objects(LOOK, objs)
    assert got == ["agent", "battery", "blue light bulb", "freezer", "light", "wire"]
    assert "hallway" not in got  # only in the door lines
    assert "cup" not in got


def test_name_words_single_out_the_target():
    rng = random.Random(0)
    names = ["blue light bulb", "red light bulb", "battery"]
    for _ in range(20):
        w = naming_words("blue light bulb", names, 1, rng)
        assert w is not None and "blue" in w
    assert naming_words("light bulb", ["light bulb", "blue light bulb"], 2, rng) is None


def test_random_action_never_focuses():
    rng = random.Random(1)
    acts = [random_action(["apple", "table", "sink"], rng) for _ in range(300)]
    assert not any(a.startswith("focus on") for a in acts)
    assert not any(a.startswith(("connect", "disconnect")) for a in acts)
    assert {"look around", "inventory"} <= set(acts)
    assert any(a.startswith("move ") and " to " in a for a in acts)


def test_drills_need_a_nameable_object():
    empty = RoomView("sciworld/boil/0", "hallway", LOOK, ["agent", "air"])
    with pytest.raises(PretrainError, match="nameable"):
        list(lookup_drills([empty], 2))
    assert sciworld_identifiers() == []


# -- the corpus -------------------------------------------------------------------------------
def test_corpus_counts_and_determinism(env, cfg, corpus):
    kinds = [t.source.extra["task"] for t in corpus]
    assert kinds.count("lookup") == 16 and kinds.count("pick") == 16
    assert kinds.count("explore") == 3
    assert kinds.count("lookup_short") == cfg.short_drills
    for t in corpus:
        assert bool(t.source.extra.get("short")) == (t.source.extra["task"] == "lookup_short")
    again = list(sciworld_corpus(cfg, env=env, progress=False))

    def key(t: Trajectory):
        return (t.task_id, t.instruction, t.source.extra.get("variation"),
                [(s.action, s.thought, s.train) for s in t.steps])
    assert [key(t) for t in again] == [key(t) for t in corpus]
    # the copy tasks' texts are the same too (listings are sorted by the env)
    copy = [t.to_dict() for t in corpus if t.source.extra["task"] != "explore"]
    assert [t.to_dict() for t in again if t.source.extra["task"] != "explore"] == copy
    other = list(sciworld_corpus(_cfg(short_drills=0, warmup_steps=0, lookup_drills=16,
                                      pick_tasks=0, explore_episodes=0, seed=4), env=env,
                                 progress=False))
    assert [key(t) for t in other] != [key(t) for t in corpus if t.source.extra["task"] == "lookup"]


def test_corpus_uses_train_variations_only(env, corpus, held_out):
    sp = env.splits()
    train = {env.task_id(*p) for p in train_only_pairs(env)}
    assert len(train) == len(sp["train"]) - 54  # ETO's train file shares 54 with dev
    assert not train & held_out
    seen = {t.source.extra["variation"] for t in corpus}
    assert seen <= train
    loaded = set(corpus[0]._loaded)  # every variation the simulator loaded for the corpus
    assert loaded and loaded <= train
    assert len({v.split("/")[1] for v in loaded}) == 24  # all protocol task types


def test_no_outcome_reward_or_focus_in_exploration(corpus):
    for t in corpus:
        assert t.reward == 0.0 and not t.success and not t.done
        for s in t.steps:
            assert s.reward == 0.0
            assert not OUTCOME.search(s.observation), s.observation
            if t.source.extra["task"] == "explore":
                assert not s.action.startswith("focus on")
                # invalid actions stay in the context, out of the loss
                assert s.train == s.valid
                if s.observation.strip() == NO_ACTION or s.observation.startswith("Unknown"):
                    assert not s.train
    explore = [t for t in corpus if t.source.extra["task"] == "explore"]
    assert all(t.steps for t in explore)


class _ScriptedEnv:
    """A stand-in env: step k answers ``script[k]`` as (observation, info)."""

    max_steps = 10

    def __init__(self, script):
        self.script, self.k = script, 0

    def task_id(self, task, var):
        return f"sciworld/{task}/{var}"

    def reset(self, task_id):
        self.k = 0
        return "Your task is to boil water.\n\nThis room is called the kitchen."

    def objects(self):
        return ["pot", "stove", "water"]

    def step(self, action):
        from eef.envs.base import StepResult
        obs, info = self.script[self.k]
        self.k += 1
        return StepResult(obs, 0.5, bool(info.get("done")), {"valid": True, **info})


def test_exploration_cuts_the_outcome_and_masks_invalid_actions():
    from eef.presets.sciworld import explore_transcripts
    script = [("You move to the kitchen.", {}),
              (NO_ACTION, {"valid": False}),
              ("Ambiguous request: Please enter the number for the action you intended (or "
               "blank to cancel):\n0:\tpot (in kitchen)\n1:\tpot (in stove)\n", {}),
              ("Unknown action.  Type 'help' for a list of actions.", {}),
              ("The stove is now activated.", {}),
              ("You focus on the water.", {"done": True, "failed": True}),
              ("never reached", {})]
    env = _ScriptedEnv(script)
    [t] = explore_transcripts(env, 1, pairs=[("boil", 0)])
    assert len(t.steps) == 5  # cut before the step that failed the task
    assert [s.train for s in t.steps] == [True, False, True, False, True]
    assert t.steps[3].action in ("0", "1")  # the ambiguity question is answered with a number
    assert all(s.reward == 0.0 for s in t.steps) and t.reward == 0.0
    env = _ScriptedEnv([("Task completed. Your score is 100.", {})])
    assert list(explore_transcripts(env, 1, pairs=[("boil", 0)])) == []


def _shown_before(t: Trajectory, k: int) -> str:
    return t.steps[k - 1].observation if k else t.initial_observation


def test_trained_actions_name_listed_objects(env, corpus):
    for t in corpus:
        if t.source.extra["task"] == "explore":
            continue
        trained = [k for k, s in enumerate(t.steps) if s.train]
        assert trained == [len(t.steps) - 1]
        action = t.steps[-1].action
        target = t.source.extra["target"]
        assert action in (f"focus on {target}", f"pick up {target}", f"open {target}")
        shown = _shown_before(t, len(t.steps) - 1).split("You also see")[0].lower()
        assert re.search(rf"(?<![a-z]){re.escape(target)}(?![a-z])", shown), (target, shown)
        assert target in t.source.extra["listed"]
        assert target not in ("agent", "air") and "door" not in target.split()
    # the simulator accepts the trained actions (a few, replayed where they were made)
    picks = [t for t in corpus if t.source.extra["task"] == "pick"][:4]
    for t in picks:
        env.reset(t.source.extra["variation"])
        for s in t.steps:
            r = env.step(s.action)
        assert r.info["valid"] and not r.observation.startswith("Unknown"), r.observation


# -- tokenizer texts --------------------------------------------------------------------------
def test_texts_train_a_tokenizer(env, texts, held_out):
    from eef.presets import train_tokenizer
    texts, loaded = texts
    train = {env.task_id(*p) for p in train_only_pairs(env)}
    assert len(loaded) == 24 and set(loaded) <= train  # one variation per task type
    assert any(t.startswith("This room is called") for t in texts)
    tok = train_tokenizer(texts, vocab_size=1024, identifiers=sciworld_identifiers())
    for word in (" focus", " look", " around", " kitchen", " substance", " called"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    text = "Action: pick up blue light bulb"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text.lower()


# -- the copy probe ---------------------------------------------------------------------------
class _Fixed:
    spec = "fixed"

    def __init__(self, outs):
        self.outs = outs

    def act(self, contexts, sampling=None, seeds=None):
        return list(self.outs[:len(contexts)])


def test_object_pages_and_copy_counts(env, texts, tmp_path):
    texts = texts[0]
    pages = sciworld_object_pages(env, "test", limit=3)
    assert 1 <= len(pages) <= 3
    test_ids = {env.task_id(*p) for p in env.splits()["test"]}
    for p in pages:
        assert p.context.task_id in test_ids and not p.context.steps
        assert p.target in p.listed and p.target in p.context.initial_observation
    more = sciworld_object_pages(env, "test", limit=2, rooms=2)
    assert len(more) > 2 and {q.context.task_id for q in more} <= test_ids
    for q in more:
        if q.context.steps:
            assert q.context.steps[0].action.startswith("teleport to ")
            assert q.target in q.context.steps[-1].observation and not q.context.steps[-1].train
    p = pages[0]
    other = next(o for o in p.listed if o != p.target)
    outs = [f"Thought: x\nAction: {p.answer}", f"Action: focus on {other}",
            f"Action: pick up {p.target.upper()}", "Action: look around",
            f"Action: move {p.target} to {other}", "Action: pick up zzz unknown"]
    res = evaluate_object_copies(_Fixed(outs), [p] * len(outs))
    assert res["pages"] == 6
    assert res["copy_rate"] == pytest.approx(3 / 6)   # exact, lower-case names only
    assert res["target_rate"] == pytest.approx(2 / 6)
    assert res["exact_rate"] == pytest.approx(1 / 6)
    assert "unseen_pages" not in res
    q = ObjectPage(p.context, p.listed, other, "focus on")  # a page whose target is "new"
    res = evaluate_object_copies(_Fixed([f"Action: focus on {other}", outs[0], outs[0]]),
                                 [q, p, p], seen=corpus_names([]) | {p.target})
    assert res["unseen_pages"] == 1 and res["unseen_target_rate"] == 1.0
    assert res["target_rate"] == 1.0
    with pytest.raises(ProbeError):
        evaluate_object_copies(_Fixed([]), [])
    with pytest.raises(ProbeError, match="split"):
        sciworld_object_pages(env, "validation")
    # a tiny random model gives a rate in [0, 1]
    from eef.presets import init_preset
    model = init_preset("test", None, tmp_path / "m", texts=texts)
    res = evaluate_object_copies(model, pages, max_new_tokens=8)
    assert 0.0 <= res["copy_rate"] <= 1.0 and res["pages"] == len(pages)
    assert isinstance(pages[0], ObjectPage)


def test_build_preset_for_sciworld(env, monkeypatch, tmp_path):
    """ScienceWorld's curriculum gives a whole build (a few steps of the ``test`` preset; the module's env, 1 variation per task
    type for the tokenizer)."""
    import json
    from functools import partial

    from dataclasses import replace

    from eef.presets import CURRICULA, build_preset
    monkeypatch.setitem(CURRICULA, "sciworld", replace(
        CURRICULA["sciworld"],
        texts=partial(sciworld_texts, env=env, variations_per_task=1, progress=False),
        corpus=partial(sciworld_corpus, env=env, progress=False)))
    opts = {"short_drills": 32, "warmup_steps": 1, "warmup_batch_size": 8, "short_replay": 8,
            "lookup_drills": 16, "explore_episodes": 2, "pick_tasks": 16, "steps": 2,
            "batch_size": 8, "max_tokens": 512}
    out = build_preset("test", "sciworld", out=tmp_path / "m", progress=False, threads=1,
                          **opts)
    info = json.loads((out / "eef_preset.json").read_text())
    assert info["identifier_tokens"] == 0
    assert set(info["pretraining"]["data"]) == {"train_indices.json", "dev_indices.json",
                                                "test_indices.json", "max_steps.json"}
    assert info["pretraining"]["corpus"]["pick"]["trained_actions"] == 16
