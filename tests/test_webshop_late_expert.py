"""The late WebShop expert (``expert:late``), spec parameters and the failure breakdown."""

import random

import pytest

import eef.envs as envs
from eef.experts.webshop import (LATE, STAGES, LateExpert, failure_breakdown, failure_stage,
                                 reached_target)
from eef.policy import PolicySpecError, load_policy
from eef.rollout.episode import run_episode

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def env():
    e = envs.make("webshop", max_steps=10)
    yield e
    e.close()


@pytest.fixture(scope="module")
def ids(env):
    return random.Random(0).sample([t.id for t in env.tasks("train")], 12)


def test_same_seed_same_trajectory(env, ids):
    late = load_policy("expert:late", env)
    for i in ids[:6]:
        a, b = run_episode(env, late, i, seed=3), run_episode(env, late, i, seed=3)
        assert a.actions == b.actions and [s.thought for s in a.steps] == \
            [s.thought for s in b.steps]
    # the choices are per (task, seed): another seed changes some episode
    plans = {s: [late.plan(i, s) for i in ids] for s in (0, 1, 2)}
    assert plans[0] != plans[1] or plans[0] != plans[2]
    # one turn asked without seeds acts as episode seed 0
    t = run_episode(env, late, ids[0])
    ctx = t.prefix(2)
    assert late.act([ctx])[0] == late.act([ctx], seeds=[2])[0]


@pytest.mark.parametrize("kw", [{"option_error": 1.5}, {"dawdle": -0.1}, {"dawdle": True},
                                {"option_error": "high"}])
def test_parameters_are_checked(env, kw):
    with pytest.raises(ValueError, match="must be a probability"):
        LateExpert(env, **kw)


@pytest.mark.parametrize("spec, match", [
    ("expert:late(dawdle=2)", "dawdle must be a probability"),
    ("expert:late(tardy=0.5)", "no parameter tardy; known: dawdle, option_error"),
    ("expert:late(dawdle)", "expected KEY=VALUE"),
    ("expert:late(dawdle=0.1, dawdle=0.2)", "given twice"),
    ("expert:late(dawdle=0.1", "expected expert:NAME"),
    ("expert:tardy(dawdle=0.1)", "unknown expert 'tardy'"),
])
def test_bad_specs_name_the_problem(env, spec, match):
    with pytest.raises(PolicySpecError, match=match):
        load_policy(spec, env)


def test_spec_parameters_and_canonical_spec(env):
    late = load_policy("expert:late( option_error = 0, dawdle=0.5 )", env)
    assert (late.option_error, late.dawdle) == (0.0, 0.5)
    assert late.spec == "expert:late(dawdle=0.5, option_error=0)"
    again = load_policy(late.spec, env)
    assert (again.option_error, again.dawdle) == (0.0, 0.5)
    assert load_policy("expert:late", env).spec == "expert:late"
    assert load_policy("expert:noisy(slip=0.5)", env).slip == 0.5  # the other experts too


def test_without_errors_it_wins_as_oracle_does(env, ids):
    late = load_policy("expert:late(option_error=0, dawdle=0)", env)
    oracle = load_policy("expert:oracle", env)
    for i in ids[:6]:
        a, b = run_episode(env, late, i), run_episode(env, oracle, i)
        assert a.actions == b.actions and a.success == b.success


@pytest.mark.parametrize("max_steps", [10, 15])
def test_dawdling_never_buys(max_steps, ids):
    e = envs.make("webshop", max_steps=max_steps)
    late = load_policy("expert:late(dawdle=1)", e)
    for i in ids[:5]:
        t = run_episode(e, late, i)
        assert len(t.steps) == max_steps and "click[buy now]" not in t.actions
        assert failure_stage(t, e) == "out of steps on the target"
    e.close()


def test_wrong_options_are_wrong(env, ids):
    late = load_policy("expert:late(option_error=1, dawdle=0)", env)
    stages = [failure_stage(run_episode(env, late, i), env) for i in ids[:6]]
    assert stages.count("right product, wrong option") >= 4, stages


def test_its_failures_come_after_the_target_page(env, ids):
    late = load_policy("expert:late", env)
    trajs = [run_episode(env, late, i) for i in ids]
    fails = [t for t in trajs if not t.success]
    assert fails and all(reached_target(t, env) for t in fails)
    assert {failure_stage(t, env) for t in fails} <= LATE
    counts = failure_breakdown(trajs, env)
    assert list(counts) == [*STAGES, "late"]
    assert counts["success"] + counts["late"] == len(trajs) and counts["late"] == len(fails)
