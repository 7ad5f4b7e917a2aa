import json

import pytest

from eef.react import parse_turn, render_turn
from eef.trajectory import (Provenance, Step, Trajectory, TrajectoryFormatError, from_sharegpt,
                            read_jsonl, to_sharegpt, write_jsonl)


def make_traj(i=0):
    return Trajectory(
        task_id=f"webshop/B000000000/{i}", env="webshop", instruction="Find me a \u00e9 thing",
        initial_observation="WebShop [SEP] Instruction: [SEP] x [SEP] Search",
        steps=[Step("search[red shoes]", "Back to Search [SEP] Page 1", "I search.", 0.0),
               Step("click[B0ABCDEFGH]", "item \U0001f600 page", "", 0.0, train=False,
                    label="harmful"),
               Step("click[\udcff]", "Invalid action [SEP] x", "odd", 0.0, valid=False),
               Step("click[buy now]", "Thank you", "buy", 0.75)],
        reward=0.75, success=False, done=True,
        source={"kind": "expert", "policy": "expert:heuristic", "start_state": 0, "seed": 3},
        meta={"wall_s": 0.123456789})


def test_jsonl_round_trip_is_exact(tmp_path):
    ts = [make_traj(i) for i in range(3)]
    p = tmp_path / "t.jsonl"
    assert write_jsonl(p, ts) == 3
    assert read_jsonl(p) == ts
    # appending keeps the file valid
    write_jsonl(p, [make_traj(9)], append=True)
    assert [t.task_id for t in read_jsonl(p)][-1].endswith("/9")


def test_provenance_is_typed_and_keeps_every_key_of_a_file(tmp_path):
    t = make_traj()
    assert isinstance(t.source, Provenance) and t.source.policy == "expert:heuristic"
    assert t.source.start_state == 0 and t.source.parent is None  # None: not recorded
    # a line of an older file: a plain object, with keys Provenance has no field for
    old = {**t.to_dict(), "source": {"kind": "pretrain", "task": "pick", "listed": ["a"],
                                     "seed": 2}}
    p = tmp_path / "old.jsonl"
    p.write_text(json.dumps(old) + "\n")
    got = read_jsonl(p)[0]
    assert got.source.kind == "pretrain" and got.source.extra == {"task": "pick", "listed": ["a"]}
    assert got.to_dict() == old and list(got.to_dict()["source"]) == ["kind", "seed", "task",
                                                                       "listed"]
    sim = Provenance("simulation", "hf:m", start_state=3, parent="expert/x", sample=1, seed=9)
    assert Provenance.from_dict(sim.to_dict()) == sim
    assert sim.to_dict() == {"kind": "simulation", "policy": "hf:m", "start_state": 3,
                             "parent": "expert/x", "sample": 1, "seed": 9}


def test_partial_last_line_is_skipped_and_bad_lines_raise(tmp_path):
    p = tmp_path / "t.jsonl"
    write_jsonl(p, [make_traj(0)])
    with open(p, "a") as f:
        f.write('{"task_id": "half')  # a writer killed mid-line
    assert len(read_jsonl(p)) == 1
    p.write_text('{"task_id": 1}\nnot json\n')
    with pytest.raises(TrajectoryFormatError, match=r"t.jsonl:1"):
        read_jsonl(p)
    p.write_text('[1, 2]\n')
    with pytest.raises(TrajectoryFormatError):
        read_jsonl(p)
    with pytest.raises(TrajectoryFormatError, match="no such"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_prefix_is_state_k():
    t = make_traj()
    p = t.prefix(2)
    assert p.actions == t.actions[:2] and not p.done and p.reward == 0.0
    p.steps[0].action = "changed"
    assert t.steps[0].action == "search[red shoes]"  # a copy


def test_sharegpt_round_trip_keeps_turns_and_loss_flags():
    t = make_traj()
    d = to_sharegpt(t)
    assert d["conversations"][0]["from"] == "human"
    assert [c["loss"] for c in d["conversations"] if c["from"] == "gpt"] == \
        [s.train for s in t.steps]
    back = from_sharegpt(json.loads(json.dumps(d)), "webshop", t.instruction)
    assert back.actions == t.actions
    assert back.observations == t.observations
    assert [s.thought for s in back.steps] == [s.thought for s in t.steps]
    assert [s.train for s in back.steps] == [s.train for s in t.steps]
    assert back.initial_observation == t.initial_observation
    assert back.reward == t.reward


def test_sharegpt_eto_style_prompt_exchange():
    d = {"id": 7, "conversations": [
        {"from": "human", "value": "You are web shopping. Reply OK."},
        {"from": "gpt", "value": "OK"},
        {"from": "human", "value": "Observation: WebShop [SEP] Instruction: [SEP] x [SEP] Search"},
        {"from": "gpt", "value": "Thought: go\nAction: search[x]"},
        {"from": "human", "value": "Observation: results"}]}
    t = from_sharegpt(d, "webshop")
    assert t.actions[-1] == "search[x]" and t.steps[-1].observation == "results"
    with pytest.raises(TrajectoryFormatError):
        from_sharegpt({"conversations": [{"from": "robot", "value": "x"}]}, "webshop")
    with pytest.raises(TrajectoryFormatError):
        from_sharegpt({"id": 1}, "webshop")


@pytest.mark.parametrize("text,want", [
    ("Thought: go\nAction: search[red shoes]", ("go", "search[red shoes]")),
    ("Action: click[Buy Now]\nAction: click[x]", ("", "click[Buy Now]")),
    ("search[a]", ("", "search[a]")),
    ("Thought: hmm\nclick[b]", ("hmm", "click[b]")),
    ("Thought: only thinking", ("only thinking", "")),
    ("", ("", "")),
    ('blah Action: click["x"].', ("blah", 'click["x"]')),
    ("I think. Action: `click[y]`", ("I think.", "click[y]")),
    ("Thought: a\nb\nACTION:   c  ", ("a b", "c")),
    ("Thought: x\nAction: search[a]\nObservation: fake\nAction: click[z]", ("x", "search[a]")),
])
def test_parse_turn_rule(text, want):
    assert parse_turn(text) == want


def test_render_then_parse_round_trip():
    for th, a in [("I search.", "search[3 ounce deodorant]"), ("", "click[< prev]")]:
        assert parse_turn(render_turn(th, a)) == (th, a)
