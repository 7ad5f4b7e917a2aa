import json

import pytest

from eef.algorithms.labels import (BENEFICIAL, HARMFUL, NEUTRAL, UNUSED, StateOutcome,
                                   build_sample, eef_samples, important_states, label_actions,
                                   simulation_states)
from eef.trajectory import Step, Trajectory


def expert(n=12, success=False):
    return Trajectory("t/1", "toy", "do it", "obs0",
                      [Step(f"a{i}", f"o{i + 1}", f"th{i}") for i in range(n)],
                      0.0, success, True, {"kind": "expert", "policy": "expert:x", "id": "e1"})


def solution(exp, k, success=True, reward=1.0, extra=3, sample=0):
    steps = [Step(s.action, s.observation + "'", s.thought) for s in exp.steps[:k]]
    steps += [Step(f"g{k}_{j}", f"p{j}", "mine") for j in range(extra)]
    return Trajectory(exp.task_id, exp.env, exp.instruction, "obs0'", steps, reward, success, True,
                      {"kind": "simulation", "start_state": k, "sample": sample, "policy": "hf:x"})


def test_simulation_states_spacing():
    # l = floor(|tau| / (M + 1)): 12 steps, M = 3 -> l = 3 -> s0, s3, s6, s9
    assert simulation_states(12, 3) == [0, 3, 6, 9]
    assert simulation_states(25, 5) == [0, 4, 8, 12, 16, 20]
    assert simulation_states(3, 5) == [0, 1, 2]  # l would be 0: every state
    assert simulation_states(0, 5) == [0]
    with pytest.raises(ValueError):
        simulation_states(5, -1)
    # the simulation requests ask for the same states
    from eef.algorithms.labels import simulation_requests
    reqs = simulation_requests(expert(12), 3, samples=2)
    assert [r.start_state for r in reqs] == [0, 3, 6, 9] and all(r.samples == 2 for r in reqs)
    assert reqs[0].parent is None and all(r.parent is not None for r in reqs[1:])
    assert [r.start_state for r in simulation_requests(expert(3), 5, include_start=False)] == [1, 2]


def test_figure_1_example():
    # fail from s0, succeed from s_l, fail from s_2l, succeed from s_3l (l = 3)
    e = expert(12)
    outs = [StateOutcome(0, [solution(e, 0, False, 0.2)]),
            StateOutcome(3, [solution(e, 3, False, 0.1), solution(e, 3)]),
            StateOutcome(6, [solution(e, 6, False, 0.0)]),
            StateOutcome(9, [solution(e, 9)])]
    labels = label_actions(12, outs)
    assert labels[0:3] == [BENEFICIAL] * 3          # a_0 .. a_{l-1}
    assert labels[3:6] == [HARMFUL] * 3             # a_l .. a_{2l-1}
    assert labels[6:9] == [BENEFICIAL] * 3          # a_{2l} .. a_{3l-1}
    assert labels[9:] == [UNUSED] * 3               # after the last simulated state
    assert important_states(outs, task_solved_from_start=False) == [0, 6]
    assert important_states(outs, task_solved_from_start=True) == [6]

    samples, labs, imp = eef_samples(e, outs, task_solved_from_start=False)
    assert labs == labels and imp == [0, 6] and len(samples) == 2
    a, b = samples
    # sample from s0: a_0..a_2 (beneficial, trained) + the agent's solution from s_3
    assert a.actions == ["a0", "a1", "a2", "g3_0", "g3_1", "g3_2"]
    assert [s.train for s in a.steps] == [True] * 6
    assert [s.label for s in a.steps] == [BENEFICIAL] * 3 + ["agent"] * 3
    # the prefix keeps the replayed observations the agent saw
    assert a.steps[0].observation == "o1'" and a.initial_observation == "obs0'"
    # sample from the recovery state s_6: harmful a_3..a_5 masked
    assert b.actions[:9] == [f"a{i}" for i in range(9)] and b.actions[9:] == ["g9_0", "g9_1", "g9_2"]
    assert [s.train for s in b.steps] == [True] * 3 + [False] * 3 + [True] * 6
    assert b.meta["recovery"] and not a.meta["recovery"]
    assert b.source.start_state == 9 and b.success and b.source.parent == "e1"


def test_neutral_steps_and_selection_rule():
    e = expert(8)
    outs = [StateOutcome(0, [solution(e, 0, False, 0.0)]),
            StateOutcome(4, [solution(e, 4, False, 0.0)]),
            StateOutcome(6, [solution(e, 6, extra=5, sample=0), solution(e, 6, extra=2, sample=1),
                             solution(e, 6, extra=2, sample=2)])]
    labels = label_actions(8, outs)
    assert labels[:4] == [NEUTRAL] * 4 and labels[4:6] == [BENEFICIAL] * 2
    samples, _, _ = eef_samples(e, outs, False, train_neutral=False)
    (s,) = samples
    assert s.source.sample == 1  # shortest solution, lowest index among ties
    assert [st.train for st in s.steps[:6]] == [False] * 4 + [True] * 2
    samples, _, _ = eef_samples(e, outs, False, train_neutral=True)
    assert all(st.train for st in samples[0].steps)


def test_no_sample_without_a_later_solvable_state():
    e = expert(6)
    outs = [StateOutcome(0, [solution(e, 0)]), StateOutcome(3, [solution(e, 3, False, 0.0)])]
    samples, labels, imp = eef_samples(e, outs, False)
    assert imp == [3] and samples == [] and labels[:3] == [HARMFUL] * 3


def test_build_sample_checks_its_inputs():
    e = expert(6)
    sol = solution(e, 3)
    with pytest.raises(ValueError, match="starts at state"):
        build_sample(e, label_actions(6, []), sol, 2)
    sol.steps[0].action = "other"
    with pytest.raises(ValueError, match="not the expert"):
        build_sample(e, label_actions(6, []), sol, 3)


def test_diverged_replays_carry_no_evidence():
    e = expert(12)
    diverged = solution(e, 3)
    diverged.meta["replay_match"] = "different"
    outs = [StateOutcome(0, [solution(e, 0, False, 0.2)]), StateOutcome(3, [diverged]),
            StateOutcome(6, [solution(e, 6, False, 0.0)]), StateOutcome(9, [solution(e, 9)])]
    assert outs[1].diverged and not outs[3].diverged
    labels = label_actions(12, outs)
    assert labels[0:6] == [NEUTRAL] * 6  # both segments touching the diverged s_3
    assert labels[6:9] == [BENEFICIAL] * 3
    samples, _, important = eef_samples(e, outs, task_solved_from_start=False)
    assert important == [0]
    (s,) = samples  # from s_0: the solution at s_9 (s_3's is not used)
    assert s.source.start_state == 9 and all(st.train for st in s.steps)


def test_keep_rules_of_eef_samples_and_the_positive_repository():
    from eef.algorithms.positives import PositiveRepository
    e = expert(8)
    same = solution(e, 6, extra=2, sample=2)
    outs = [StateOutcome(0, [solution(e, 0, False, 0.0)]),
            StateOutcome(6, [solution(e, 6, extra=5, sample=0), solution(e, 6, extra=2, sample=1),
                             same])]
    one, _, _ = eef_samples(e, outs, False, keep="shortest")
    every, _, _ = eef_samples(e, outs, False, keep="distinct")
    assert [s.source.sample for s in one] == [1]
    assert [s.source.sample for s in every] == [1, 2, 0]  # the selection rule's order
    for keep, kept in (("shortest", [1]), ("distinct", [1, 0]), ("all", [1, 2, 0])):
        rep = PositiveRepository(keep)
        added = [rep.offer(("eef", "e1", 0), s) for s in every]
        assert [s.source.sample for s in rep.trajectories()] == kept and len(rep) == len(kept)
        assert sum(added) == len(kept)
    # shortest replaces a kept success by a better one; failures are never kept
    rep = PositiveRepository("shortest")
    assert rep.offer("t", every[2]) and rep.offer("t", every[0]) and not rep.offer("t", every[1])
    assert not rep.offer("t", solution(e, 0, False, 0.0)) and rep.trajectories() == [every[0]]
    with pytest.raises(ValueError, match="keep rule"):
        PositiveRepository("longest")


def test_label_records_round_trip_and_older_files_load():
    from eef.algorithms.labels import LabelRecord
    e = expert(12)
    outs = [StateOutcome(0, [solution(e, 0, False)]), StateOutcome(6, [solution(e, 6)])]
    samples, labels, important = eef_samples(e, outs, False)
    rec = LabelRecord.of(e, "e1", outs, labels, important, len(samples))
    assert rec.states == [0, 6] and rec.solved == [False, True] and rec.important == [0]
    assert LabelRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    old = LabelRecord.from_dict({"task_id": "a", "states": [0, 3], "solved": [True, False],
                                 "labels": []})  # before parent, expert, diverged, important
    assert old.diverged == [False, False] and old.important == [] and old.parent is None
    with pytest.raises(ValueError):
        LabelRecord.from_dict({"task_id": "a", "states": [0], "solved": [], "labels": []})
