"""Paired per-goal differences and their bootstrap intervals (eef.report.paired) on hand-made
inputs with known answers."""

import math

import numpy as np
import pytest

from eef.envs.base import task_family
from eef.report.paired import (PairedError, bootstrap_means, compare_runs, goal_means,
                               paired_difference, sign_test_p)


def _run(scores: dict[str, float]):
    """One run's episodes: reward = score / 100, success when the score is 100."""
    return [(g, s / 100, s == 100) for g, s in scores.items()]


def test_goal_means_average_episodes_within_a_run_then_over_runs():
    r1 = [("g0", 1.0, True), ("g0", 0.0, False), ("g1", 0.5, False)]
    r2 = [("g0", 1.0, True), ("g2", 0.25, False)]
    m = goal_means([r1, r2])
    assert list(m) == ["g0", "g1", "g2"]
    assert m["g0"] == pytest.approx((0.75, 75.0))  # (0.5 + 1) / 2, (50 + 100) / 2
    assert m["g1"] == pytest.approx((0.0, 50.0)) and m["g2"] == pytest.approx((0.0, 25.0))


def test_known_difference_and_sign_count():
    a = _run({"g0": 100, "g1": 50, "g2": 0, "g3": 100})
    b = _run({"g0": 0, "g1": 50, "g2": 0, "g3": 40})
    p = compare_runs([a], [b], ("A", "B"))
    assert p.goals == 4 and p.only_a == p.only_b == 0 and (p.runs_a, p.runs_b) == (1, 1)
    assert p.win_rate_a == 0.5 and p.win_rate_b == 0.0 and p.win_rate_diff == 0.5
    assert p.score_a == 62.5 and p.score_b == 22.5 and p.score_diff == pytest.approx(40.0)
    assert (p.a_better, p.b_better, p.ties) == (2, 0, 2)
    assert p.sign_p == 0.5  # 2 of 2 untied goals: 2 x (1/4)
    assert p.score_lo <= p.score_diff <= p.score_hi
    # every resample's mean lies within the per-goal differences' range
    assert 0 <= p.score_lo and p.score_hi <= 100
    assert p.note == ""


def test_interval_excludes_zero_for_a_consistent_gain_and_contains_it_for_noise():
    rng = np.random.default_rng(1)
    goals = [f"g{i}" for i in range(116)]
    base = {g: float(rng.uniform(0, 80)) for g in goals}
    better = {g: base[g] + float(rng.uniform(2, 10)) for g in goals}  # +2..+10 on every goal
    p = compare_runs([_run(better)], [_run(base)])
    assert p.score_diff == pytest.approx(np.mean([better[g] - base[g] for g in goals]))
    assert 0 < p.score_lo < p.score_diff < p.score_hi
    assert p.a_better == 116 and p.sign_p < 1e-30
    # symmetric noise: +d and -d on alternate goals
    noisy = {g: base[g] + (5 if i % 2 else -5) for i, g in enumerate(goals)}
    q = compare_runs([_run(noisy)], [_run(base)])
    assert q.score_diff == pytest.approx(0.0, abs=1e-9)
    assert q.score_lo < 0 < q.score_hi
    assert (q.a_better, q.b_better) == (58, 58) and q.sign_p == 1.0
    assert q.win_rate_diff == q.win_rate_lo == q.win_rate_hi == 0.0  # no win on either side


def test_bootstrap_is_deterministic_and_seeded():
    d = np.arange(30, dtype=float) - 10
    a = bootstrap_means(d, 2000, seed=3)
    assert np.array_equal(a, bootstrap_means(d, 2000, seed=3))
    assert not np.array_equal(a, bootstrap_means(d, 2000, seed=4))
    assert a.shape == (2000, 1)
    m = {f"g{i}": (float(i % 2), float(i)) for i in range(30)}
    z = {f"g{i}": (0.0, 10.0) for i in range(30)}
    p1 = paired_difference(m, z)
    assert p1 == paired_difference(m, z) and p1.resamples == 10_000 and p1.seed == 0
    assert p1 != paired_difference(m, z, seed=1)
    # many goals: the chunked draw gives the same means as one draw would in distribution
    big = np.ones(5000)
    assert np.all(bootstrap_means(big, 500) == 1.0)


def test_zero_variance_and_one_goal():
    a = _run({"g0": 80, "g1": 30, "g2": 55})
    b = _run({"g0": 70, "g1": 20, "g2": 45})
    p = compare_runs([a], [b])
    assert p.score_diff == p.score_lo == p.score_hi == pytest.approx(10.0)  # up to rounding
    assert p.win_rate_diff == p.win_rate_lo == p.win_rate_hi == 0.0
    one = compare_runs([_run({"g0": 100})], [_run({"g0": 0})])
    assert (one.goals, one.score_diff, one.score_lo, one.score_hi) == (1, 100.0, 100.0, 100.0)
    assert one.sign_p == 1.0  # one untied goal: as likely as not


def test_several_seeds_are_averaged_per_goal():
    a1, a2 = _run({"g0": 100, "g1": 0}), _run({"g0": 0, "g1": 0})
    b = _run({"g0": 0, "g1": 0})
    p = compare_runs([a1, a2], [b], ("A", "B"))
    assert (p.runs_a, p.runs_b) == (2, 1)
    assert p.win_rate_a == 0.25 and p.score_diff == 25.0  # g0: A's mean 50, B 0
    # with the same runs on both sides, averaging per goal = pairing seeds by index
    b1, b2 = _run({"g0": 40, "g1": 10}), _run({"g0": 20, "g1": 30})
    q = compare_runs([a1, a2], [b1, b2])
    by_index = np.mean([(100 - 40 + 0 - 20) / 2, (0 - 10 + 0 - 30) / 2])
    assert q.score_diff == pytest.approx(by_index)


def test_unequal_goal_sets_use_the_intersection_and_say_so():
    a = _run({"g0": 100, "g1": 50, "g2": 0})
    b = _run({"g1": 0, "g2": 0, "g3": 100, "g4": 100})
    p = compare_runs([a], [b], ("eef", "sft"))
    assert (p.goals, p.only_a, p.only_b) == (2, 1, 2)
    assert p.score_a == 25.0 and p.score_b == 0.0 and p.score_diff == 25.0
    assert "2 goals both evaluated" in p.note and "1 only eef" in p.note


def test_empty_inputs_are_clear_errors():
    with pytest.raises(PairedError, match="A: no evaluation runs"):
        compare_runs([], [_run({"g0": 1})])
    with pytest.raises(PairedError, match="B: no evaluated goals"):
        compare_runs([_run({"g0": 1})], [[]])
    with pytest.raises(PairedError, match="no goal in common"):
        compare_runs([_run({"g0": 1})], [_run({"g1": 1})])
    with pytest.raises(PairedError, match="level"):
        paired_difference({"g": (1, 1)}, {"g": (0, 0)}, level=1.5)


def test_sign_test():
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(3, 3) == 1.0
    assert sign_test_p(10, 0) == pytest.approx(2 / 1024)
    assert sign_test_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert sign_test_p(8, 2) == sign_test_p(2, 8)
    assert math.isclose(sign_test_p(60, 40), 0.0569, abs_tol=1e-3)


def test_cluster_bootstrap_resamples_whole_groups():
    # two groups: a (3 goals, difference 1 each) and b (1 goal, 0): every resample draws two
    # groups, so its mean over their goals is 1 (a, a), 3/4 (a, b) or 0 (b, b)
    d = np.array([1.0, 1.0, 1.0, 0.0])
    means = bootstrap_means(d, 4000, seed=2, groups=["a", "a", "a", "b"])
    assert set(np.round(means[:, 0], 9)) == {0.0, 0.75, 1.0}
    assert np.mean(means[:, 0] == 0.75) == pytest.approx(0.5, abs=0.05)
    # one group per goal: the plain bootstrap, draw for draw
    x = np.arange(12, dtype=float) ** 2
    assert np.allclose(bootstrap_means(x, 500, seed=5, groups=list(range(12))),
                       bootstrap_means(x, 500, seed=5))
    with pytest.raises(PairedError, match="3 group labels for 4 goals"):
        bootstrap_means(d, 10, groups=["a", "a", "b"])


def test_grouped_goals_widen_the_interval():
    """Goals that go together (one product's goals won or lost as one) carry less evidence
    than as many independent goals: the family interval is wider, the mean the same."""
    rng = np.random.default_rng(3)
    a, b = {}, {}
    for p in range(20):                       # 20 products, 5 goals each
        won = rng.random() < 0.5
        for k in range(5):
            g = f"webshop/P{p}/{k}"
            a[g], b[g] = (1.0, 100.0) if won else (0.0, 0.0), (0.0, 0.0)
    by_goal = paired_difference(a, b)
    by_family = paired_difference(a, b, groups=task_family)
    assert by_goal.clusters == 100 and by_family.clusters == 20 and by_family.goals == 100
    assert by_family.win_rate_diff == by_goal.win_rate_diff
    assert (by_family.win_rate_hi - by_family.win_rate_lo
            > 1.8 * (by_goal.win_rate_hi - by_goal.win_rate_lo))


def test_task_family():
    assert task_family("webshop/B09XYZ/3") == "webshop/B09XYZ"
    assert task_family("sciworld/boil/17") == "sciworld/boil"
    # ids without a family part are their own family (never one family for everything)
    assert task_family("webshop/3") == "webshop/3" and task_family("t1") == "t1"
