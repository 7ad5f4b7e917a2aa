"""ScienceWorld pieces that need no JVM: protocol, config, text helpers, expert plans."""

import os
from pathlib import Path

import pytest

from eef.envs.sciworld import SciWorldConfig, protocol as P
from eef.envs.sciworld.env import sort_listings
from eef.envs.sciworld.gold import GoldCache, teleport_shortcuts
from eef.experts.sciworld import (GoldExpert, NoisyExpert, RandomExpert, action_objects,
                                  failure_kind, thought_for)
from eef.react import parse_turn
from eef.trajectory import Step, Trajectory

DATA = Path(os.environ.get("EEF_DATA_DIR", "")) / "sciworld"
needs_sw_data = pytest.mark.skipif(not (DATA / "test_indices.json").is_file(),
                                   reason="no sciworld protocol files in the data dir")


def test_thirty_tasks_and_the_24_of_the_protocol():
    assert len(P.ALL_TASKS) == 30
    assert len(P.PROTOCOL_TASKS) == 24
    assert set(P.ETO_MAX_STEPS) == set(P.PROTOCOL_TASKS)
    assert P.TASK_INFO["boil"]["task_type"] == "1-1"


@pytest.mark.parametrize("name,want", [
    ("task-1-boil", "boil"), ("boil", "boil"), ("1-1", "boil"),
    ("task-9-mendellian-genetics-(known-plant)", "mendelian-genetics-known-plant"),
    ("task-6-lifespan-(longest-lived-then-shortest-lived)",
     "lifespan-longest-lived-then-shortest-lived")])
def test_canonical_task_names(name, want):
    assert P.canonical_task(name) == want


def test_unknown_task_name_is_a_protocol_error():
    with pytest.raises(P.ProtocolError, match="unknown ScienceWorld task"):
        P.canonical_task("bake-a-cake")


@pytest.mark.needs_data
@needs_sw_data
def test_embedded_step_limits_equal_etos_file():
    assert P.read_max_steps(DATA) == P.ETO_MAX_STEPS


@pytest.mark.needs_data
@needs_sw_data
def test_split_files_read_as_in_the_eto_protocol():
    s = P.read_split_files(DATA)
    assert {k: len(v) for k, v in s.items()} == {"train": 1483, "dev": 194, "test": 211}
    assert {t for v in s.values() for t, _ in v} == set(P.PROTOCOL_TASKS)


def test_malformed_split_file_is_a_clear_error(tmp_path):
    for s in P.SPLITS:
        (tmp_path / f"{s}_indices.json").write_text('[["task-1-boil", 1]]')
    (tmp_path / "dev_indices.json").write_text('{"oops": 1}')
    with pytest.raises(P.ProtocolError, match="dev_indices.json"):
        P.read_split_files(tmp_path)
    assert P.read_split_files(tmp_path / "missing") is None


def _ranges(n_train, n_dev, n_test):
    return {"train": list(range(n_train)), "dev": list(range(n_train, n_train + n_dev)),
            "test": list(range(n_train + n_dev, n_train + n_dev + n_test))}


def test_derive_splits_rule():
    ranges = {"boil": _ranges(14, 7, 9), "find-animal": _ranges(150, 75, 75)}
    d = P.derive_splits(ranges, tasks=("boil", "find-animal"))
    by = {s: {t: [v for tt, v in d[s] if tt == t] for t in ranges} for s in P.SPLITS}
    assert by["test"]["boil"] == list(range(21, 30)) and by["test"]["find-animal"][0] == 225
    assert by["dev"]["boil"] == list(range(14, 21)) and len(by["dev"]["find-animal"]) == 10
    assert by["train"]["boil"] == list(range(14))  # train + dev range minus the dev set
    fa = by["train"]["find-animal"]
    assert len(fa) == 120 and max(fa) > 150 and not set(fa) & set(by["dev"]["find-animal"])
    assert P.derive_splits(ranges, tasks=("boil", "find-animal")) == d
    assert P.derive_splits(ranges, tasks=("boil", "find-animal"), seed=1)["train"] != d["train"]


@pytest.mark.parametrize("kw,msg", [
    ({"simplification": "easy,openDoors"}, "cannot be combined"),
    ({"simplification": "noDoors"}, "unknown simplification"),
    ({"max_steps": 0}, "max_steps"), ({"protocol": "eto"}, "protocol"),
    ({"score": "mean"}, "score"), ({"heap_mb": "lots"}, "heap_mb"),
    ({"replay_retries": -1}, "replay_retries"), ({"sort_listings": "no"}, "sort_listings")])
def test_config_rejects_bad_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SciWorldConfig(**kw)


def test_env_rejects_unknown_options_without_starting_java():
    from eef.envs.sciworld import SciWorldEnv
    with pytest.raises(TypeError, match="unknown SciWorldEnv option"):
        SciWorldEnv(simplifcation="easy")


def test_sort_listings_sorts_single_tab_runs_only():
    text = "Room. In it, you see:\n\tb thing\n\ta thing\nYou also see:\n\tz door\n\tc door"
    assert sort_listings(text) == ("Room. In it, you see:\n\ta thing\n\tb thing\n"
                                   "You also see:\n\tc door\n\tz door")
    nested = "x:\n\tb\n\t\tinner\n\ta"
    assert sort_listings(nested) == nested
    assert sort_listings("plain text") == "plain text"


def test_teleport_shortcuts():
    g = ["open door to kitchen", "go to kitchen", "look around", "pick up thermometer",
         "open door to hallway", "go to hallway", "go to workshop", "open box",
         "close door to greenhouse"]
    assert teleport_shortcuts(g) == ["teleport to kitchen", "look around", "pick up thermometer",
                                     "teleport to workshop", "open box",
                                     "close door to greenhouse"]
    assert teleport_shortcuts(["open door to kitchen"]) == []


def test_gold_cache_roundtrip_and_partial_line(tmp_path):
    c = GoldCache("easy", folder=tmp_path)
    c.put("boil", 3, ["look around", "focus on water"], 0.5)
    with open(tmp_path / "boil.jsonl", "a") as f:
        f.write('{"variation": 4, "act')  # a writer killed mid-line
    c2 = GoldCache("easy", folder=tmp_path)
    assert c2.get("boil", 3) == ["look around", "focus on water"]
    assert c2.get("boil", 4) is None


def test_thoughts_render_as_react_turns():
    assert "focus" in thought_for("focus on water")
    assert thought_for("move metal pot to stove") == "I move the metal pot to the stove."
    assert thought_for("0").endswith("option 0.")
    assert action_objects("move metal pot to stove") == ["metal pot", "stove"]


# -- expert plans over a fixed gold path (no simulator) -----------------------------------------
GOLD = ["teleport to kitchen", "look around", "pick up thermometer", "open cupboard",
        "pick up metal pot", "move metal pot to sink", "activate sink", "deactivate sink",
        "focus on substance in metal pot", "move metal pot to stove", "activate stove",
        "use thermometer in inventory on substance in metal pot", "wait1"]


class _FakeEnv:
    name = "sciworld"
    simplification = "easy"


def _with_gold(cls, **kw):
    ex = cls(_FakeEnv(), **kw)
    ex.gold = lambda task_id: list(GOLD)
    return ex


def _ctx(actions):
    return Trajectory("sciworld/boil/0", "sciworld", "boil water", "start",
                      [Step(a, "obs") for a in actions])


def test_gold_expert_follows_the_path_and_gives_up_after_it():
    ex = _with_gold(GoldExpert)
    assert ex.spec == "expert:gold"
    for k in (0, 3, len(GOLD) - 1):
        th, act = parse_turn(ex.act([_ctx(GOLD[:k])], seeds=[k])[0])
        assert act == GOLD[k] and th
    assert parse_turn(ex.act([_ctx(GOLD)])[0])[1] == "look around"
    # a foreign history that deviates keeps the pointer where it was
    assert parse_turn(ex.act([_ctx(GOLD[:2] + ["inventory"])])[0])[1] == GOLD[2]


def test_noisy_plans_are_deterministic_and_varied():
    ex = _with_gold(NoisyExpert, wrong_focus=0.5, wrong_object=0.2, skip=0.1, detour=0.1)
    plans = [ex.plan("sciworld/boil/0", s) for s in range(40)]
    assert plans[0] == _with_gold(NoisyExpert, wrong_focus=0.5, wrong_object=0.2, skip=0.1,
                                  detour=0.1).plan("sciworld/boil/0", 0)
    kinds = {k for p in plans for _, k in p if k}
    assert kinds == set(NoisyExpert.KINDS)
    # at most max_errors mistakes (a detour is 1-3 entries, the others one each)
    assert all(sum(1 for _, k in p if k) <= 3 * 3 for p in plans)
    default = _with_gold(NoisyExpert)
    assert any(default.plan("sciworld/boil/0", s) == [(a, None) for a in GOLD]
               for s in range(20))  # some plans are error-free
    # the episode seed is recovered from seeds = seed + step index
    p = ex.plan("sciworld/boil/0", 7)
    for k in range(4):
        got = parse_turn(ex.act([_ctx([a for a, _ in p[:k]])], seeds=[7 + k])[0])[1]
        assert got == p[k][0]


def test_noisy_wrong_focus_targets_another_object_of_the_task():
    ex = _with_gold(NoisyExpert, wrong_focus=1.0, wrong_object=0, skip=0, detour=0)
    plan = ex.plan("sciworld/boil/0", 0)
    (i, kind), = ex.errors("sciworld/boil/0", 0)
    assert kind == "wrong_focus" and plan[i][0].startswith("focus on ")
    assert plan[i][0] != "focus on substance in metal pot"


def test_failure_kind():
    ex = _with_gold(NoisyExpert, wrong_focus=1.0, wrong_object=0, skip=0, detour=0)
    plan = [a for a, _ in ex.plan("sciworld/boil/0", 0)]
    t = _ctx(plan)
    assert failure_kind(t, ex) == "wrong_focus"
    clean = _with_gold(NoisyExpert, wrong_focus=0, wrong_object=0, skip=0, detour=0)
    assert failure_kind(_ctx(GOLD[:4]), clean) == "step_limit"
    assert failure_kind(_ctx(GOLD + ["look around"]), clean) == "gave_up"
    t.success = True
    assert failure_kind(t, ex) == "success"


def test_random_expert_is_seeded():
    ex = _with_gold(RandomExpert)
    a = [parse_turn(ex.act([_ctx(["x"] * k)], seeds=[k])[0])[1] for k in range(8)]
    b = [parse_turn(ex.act([_ctx(["x"] * k)], seeds=[k])[0])[1] for k in range(8)]
    assert a == b and len(set(a)) > 1 and set(a) <= set(GOLD) | {"look around", "inventory",
                                                                 "wait1"}
