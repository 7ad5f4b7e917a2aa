"""The rollout engine on the real envs: WebShop in-process (with snapshots), ScienceWorld in
worker processes (one JVM each) with a worker killed mid-episode."""

from __future__ import annotations

import os
import signal

import pytest

from eef.envs import make
from eef.algorithms.labels import simulation_requests
from eef.rollout.engine import EngineConfig, RolloutEngine, RolloutRequest, rollout
from eef.rollout.episode import run_episode
from eef.rollout.pool import EnvSpec

pytestmark = pytest.mark.needs_data


def same(a, b):
    return (a.task_id, a.initial_observation, a.steps, a.reward, a.success) == \
        (b.task_id, b.initial_observation, b.steps, b.reward, b.success)


@pytest.fixture(scope="module")
def webshop():
    env = make("webshop")
    yield env
    env.close()


def test_webshop_engine_matches_sequential_loop(webshop):
    from eef.experts import make_expert
    pol = make_expert(webshop, "random")  # seeded: samples differ, replays are exact
    tasks = [t.id for t in webshop.tasks("test")[:8]]
    parent = run_episode(webshop, make_expert(webshop, "oracle"), tasks[0])
    assert len(parent) >= 3
    reqs = [RolloutRequest(t, samples=2, seed=7) for t in tasks]
    reqs += simulation_requests(parent, M=2, samples=3, seed=1)
    res = rollout("webshop", pol, reqs, config=EngineConfig(num_envs=4, progress=False))
    assert len(res.trajectories) == sum(r.samples for r in reqs) and not res.failures
    for t in res.trajectories:
        k = t.source.start_state
        ref = run_episode(webshop, pol, t.task_id, seed=t.source.seed,
                          prefix=parent.prefix(k) if k else None)
        assert same(t, ref)
        if k:
            assert t.meta["replay_match"] == "exact"
    assert res.stats["snapshot_restores"] > 0  # WebShop snapshots: replays are shared


def _sciworld_ok() -> bool:
    try:
        from eef.envs.sciworld.env import available
    except ImportError:
        return False
    return available()


class _LookPolicy:
    """Looks around; kills the worker of slot 0 at its ``at``-th call."""

    spec = "test:look"

    def __init__(self, at: int | None = None):
        self.at, self.pool, self.calls, self.killed = at, None, 0, []

    def act(self, contexts, sampling=None, seeds=None):
        self.calls += 1
        if self.at is not None and self.calls == self.at:
            pid = self.pool.pids()[0]
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
        return ["Thought: let me look.\nAction: look around" for _ in contexts]


@pytest.mark.slow
@pytest.mark.java
@pytest.mark.skipif(not _sciworld_ok(), reason="no Java runtime for ScienceWorld")
def test_sciworld_worker_killed_mid_episode_is_retried():
    env = make("sciworld")
    tasks = [t.id for t in env.tasks("dev")[:3]]
    env.close()
    pol = _LookPolicy(at=3)
    conf = EngineConfig(num_envs=2, backend="process", max_episode_steps=5, progress=False)
    with RolloutEngine(EnvSpec("sciworld"), pol, conf) as eng:
        pol.pool = eng.pool
        before = eng.pool.pids()
        res = eng.run([RolloutRequest(t) for t in tasks])
        after = eng.pool.pids()
    assert pol.killed == [before[0]] and after[0] != before[0]
    assert not res.failures and len(res.trajectories) == 3
    assert all(len(t) == 5 and t.meta["truncated"] for t in res.trajectories)
    retried = [t for t in res.trajectories if t.meta["retries"]]
    assert len(retried) == 1 and "died" in retried[0].meta["errors"][0]
    assert res.stats["retries"] == 1


class _SloppyShopper:
    """Searches, then clicks a *mangled* id of the first listed product, then a misspelt
    ``buy now``: every action after the search is inadmissible as written."""

    spec = "test:sloppy"

    def act(self, contexts, sampling=None, seeds=None):
        import re
        out = []
        for c in contexts:
            obs = c.steps[-1].observation if c.steps else c.initial_observation
            ids = re.findall(r"\[SEP\] (B0[0-9A-Z]{8}) \[SEP\]", obs)
            if not c.steps:
                out.append("Thought: look\nAction: search[shoes]")
            elif ids:
                out.append(f"Action: click[{ids[0][:-1]}Q]")
            else:
                out.append("Action: click[buy nwo]")
        return out


def test_grounding_maps_inadmissible_actions_to_admissible_ones(webshop):
    from eef.rollout.grounding import ground_action
    tid = webshop.tasks("test")[0].id
    pol = _SloppyShopper()
    raw = run_episode(webshop, pol, tid)  # as written: nothing is ever clicked
    assert len(raw) == webshop.max_steps and raw.reward == 0 and "grounded" not in raw.meta
    assert [s.valid for s in raw.steps][1:3] == [False, False]
    seq = run_episode(webshop, pol, tid, ground=True)
    assert len(seq) == 3 and seq.done and seq.steps[-1].action == "click[buy now]"
    assert all(s.valid for s in seq.steps)
    assert [i for i, _ in seq.meta["grounded"]] == [1, 2]
    assert seq.meta["grounded"][1][1] == "click[buy nwo]"
    webshop.reset(tid)
    webshop.step("search[shoes]")
    assert seq.steps[1].action == ground_action(seq.meta["grounded"][0][1], webshop.available_actions())
    res = rollout("webshop", pol, [RolloutRequest(tid, samples=2)],
                  config=EngineConfig(num_envs=2, progress=False, ground_actions=True))
    for t in res.trajectories:
        assert same(t, seq) and t.meta["grounded"] == seq.meta["grounded"]
    off = rollout("webshop", pol, [RolloutRequest(tid)], config=EngineConfig(num_envs=1, progress=False))
    assert same(off.trajectories[0], raw) and "grounded" not in off.trajectories[0].meta


def test_ground_action_rule():
    from eef.rollout.grounding import ground_action as g
    page = ["search[<query>]", "click[back to search]", "click[< prev]", "click[next >]",
            "click[b0abc12345]", "click[b0zzz99999]"]
    assert g("search[red shoes]", page) == "search[red shoes]"  # fills the template
    assert g("CLICK[Next >] ", page) == "CLICK[Next >] "          # admissible as written
    assert g("click[b0abc1234x]", page) == "click[b0abc12345]"   # nearest listed id
    assert g("clik[next]", page) == "click[next >]"
    assert g("search[]", page) != "search[]"                     # an empty query fills nothing
    assert g("click[x]", ["search[<query>]"]) == "click[x]"      # only a template: kept
    assert g("anything", []) == "anything"


class _Junk:
    """Never buys: every episode runs to the step limit."""

    spec = "test:junk"

    def act(self, contexts, sampling=None, seeds=None):
        return ["Action: click[nothing]"] * len(contexts)


@pytest.mark.parametrize("snapshots", [True, False])
def test_fresh_step_limit_counts_the_limit_from_the_start_state(snapshots):
    env = make("webshop", max_steps=6)
    task = env.tasks("train")[0].id
    parent = run_episode(env, _Junk(), task)  # 6 steps: it ran out of them
    assert len(parent) == 6 and not parent.success
    reqs = [RolloutRequest(task, parent, 4, seed=1),
            RolloutRequest(task, parent, 4, seed=2, fresh_step_limit=True)]
    res = rollout(EnvSpec("webshop", {"max_steps": 6}), _Junk(), reqs,
                  config=EngineConfig(num_envs=2, progress=False, use_snapshots=snapshots))
    rest, full = res.trajectories
    assert len(rest) - 4 == 2 and len(full) - 4 == 6  # max_steps - k, or max_steps after s_k
    assert full.source.fresh_step_limit and rest.source.fresh_step_limit is None
    ref = run_episode(env, _Junk(), task, prefix=parent.prefix(4), fresh_step_limit=True)
    assert same(full, ref)
    env.close()
