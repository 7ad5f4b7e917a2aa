"""The batched rollout engine on a small deterministic env (tests/rollout_fakes.py)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rollout_fakes import CountingEnv, CountingPolicy  # noqa: E402

from eef.algorithms.labels import simulation_requests  # noqa: E402
from eef.envs.base import UnknownTaskError  # noqa: E402
from eef.policy import Sampling  # noqa: E402
from eef.rollout.engine import (SAMPLE_SEED_STRIDE, EngineConfig, RolloutEngine,  # noqa: E402
                                RolloutRequest, RolloutRequestError, failed_path, rollout,
                                trajectory_id)
from eef.rollout.episode import run_episode  # noqa: E402
from eef.trajectory import read_jsonl  # noqa: E402


def cfg(**kw):
    return EngineConfig(**{"num_envs": 4, "progress": False, **kw})


def same(a, b):
    return (a.task_id, a.initial_observation, a.steps, a.reward, a.success, a.done) == \
        (b.task_id, b.initial_observation, b.steps, b.reward, b.success, b.done)


def expert_parent(task="t3", n_noise=2):
    """A recorded trajectory with some wasted moves (so its states differ)."""
    env = CountingEnv()
    pol = CountingPolicy(noise=0.6)
    for seed in range(100):
        t = run_episode(env, pol, task, seed=seed)
        if len(t) >= 6:
            t.source.kind = "expert"
            return t
    raise AssertionError("no long enough parent")


def test_engine_matches_sequential_loop_from_start():
    reqs = [RolloutRequest(f"t{i}", samples=3, seed=10 * i) for i in range(12)]
    res = rollout(CountingEnv, CountingPolicy(noise=0.4), reqs, config=cfg())
    assert len(res.trajectories) == 36 and not res.failures
    env, pol = CountingEnv(), CountingPolicy(noise=0.4)
    for t in res.trajectories:
        i, r = t.source.sample, reqs[int(t.task_id[1:])]
        assert t.source.seed == r.seed + SAMPLE_SEED_STRIDE * i
        ref = run_episode(env, pol, t.task_id, seed=t.source.seed)
        assert same(t, ref)
        assert t.source.kind == "policy" and t.source.policy == "test:counting"
        assert t.meta["env_steps"] == len(t) and t.meta["wall_s"] >= 0
    # the noisy policy gives different samples of one task, and some fail
    assert 0 < res.stats["success_rate"] < 1
    assert len({tuple(t.actions) for t in res.trajectories}) > 12


@pytest.mark.parametrize("mode", ["replay", "snapshots", "snapshots-per-worker"])
def test_engine_matches_sequential_loop_from_expert_states(mode):
    parent = expert_parent()
    pid = trajectory_id(parent)
    reqs = simulation_requests(parent, M=2, samples=4, seed=5)
    assert [r.start_state for r in reqs] == [0, len(parent) // 3, 2 * (len(parent) // 3)]
    factory = CountingEnv if mode == "replay" else SnapshotCountingEnv()
    backend = "process" if mode == "snapshots-per-worker" else "local"
    res = rollout(factory, CountingPolicy(noise=0.3), reqs,
                  config=cfg(num_envs=2, backend=backend))
    env, pol = CountingEnv(), CountingPolicy(noise=0.3)
    assert len(res.trajectories) == 12
    for t in res.trajectories:
        k = t.source.start_state
        ref = run_episode(env, pol, t.task_id, seed=t.source.seed,
                          prefix=parent.prefix(k) if k else None)
        assert same(t, ref)
        assert t.actions[:k] == parent.actions[:k]  # replayed turns stay in the context
        if k:
            assert t.source.kind == "simulation" and t.source.parent == pid
            assert t.meta["replay_match"] == "exact"
        else:
            assert t.source.parent is None
    replayed = sum(b.replay_steps for b in res.budgets)
    kmax = reqs[-1].start_state
    if mode == "replay":  # every episode replays its prefix
        assert replayed == 4 * (reqs[1].start_state + kmax)
        assert res.stats["snapshot_restores"] == 0
    elif mode == "snapshots":  # one pass for both states, shared by the slots of the process
        assert replayed == kmax and res.stats["snapshot_restores"] == 7
    else:  # at most one pass per worker
        assert kmax <= replayed <= 2 * kmax and res.stats["snapshot_restores"] >= 6


class SnapshotCountingEnv:
    """A picklable factory of counting envs that snapshot."""

    def __call__(self):
        return CountingEnv(snapshots=True)


def test_replay_divergence_is_reported():
    parent = expert_parent()
    bad = parent.prefix(len(parent))
    bad.steps[1].observation = "count=99"  # the record disagrees with the env
    res = rollout(CountingEnv, CountingPolicy(), [RolloutRequest(bad.task_id, bad, 3)],
                  config=cfg())
    t = res.trajectories[0]
    assert t.meta["replay_match"] == "different" and t.meta["replay_divergence"] == 1
    assert t.steps[1].observation == "count=" + parent.steps[1].observation.split("=")[1]
    assert res.stats["replay"]["different"] == 1


def test_continuous_batching_keeps_the_batch_full():
    pol = CountingPolicy()
    # targets 2..6: episode lengths 3..7 steps
    reqs = [RolloutRequest(f"t{i}") for i in range(20)]
    res = rollout(CountingEnv, pol, reqs, config=cfg(num_envs=4))
    steps = sum(len(t) for t in res.trajectories)
    assert max(pol.batches) == 4
    # a finished slot is refilled at once: only the tail runs with a partial batch
    full = [b for b in pol.batches if b == 4]
    assert sum(full) >= steps - 4 * 7
    assert res.stats["act_calls"] == len(pol.batches) < steps


def test_budget_and_token_accounting():
    reqs = [RolloutRequest("t1", samples=2, sampling=Sampling(temperature=0.7)),
            RolloutRequest("t2", samples=3)]
    res = rollout(CountingEnv, CountingPolicy(), reqs, config=cfg())
    for t in res.trajectories:
        assert t.meta["generated_tokens"] == 8 * len(t)  # 8 words per response
    t0 = res.trajectories[0]
    assert t0.source.sampling == {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 96}
    b0, b1 = res.budgets
    assert b0.episodes == 2 and b1.episodes == 3
    assert b0.env_steps == sum(len(t) for t in res.trajectories[:2])
    assert b1.generated_tokens == 8 * sum(len(t) for t in res.trajectories[2:])
    assert b0.wall_s > 0


def test_prompt_tokens_from_per_context_counts_or_from_the_policy_counters():
    from types import SimpleNamespace

    class Lists(CountingPolicy):  # a prompt of 10 tokens per step so far, 4 of them reused
        def act(self, contexts, *a, **k):
            self.last_prompt_tokens = [10 * (1 + len(c.steps)) for c in contexts]
            self.last_reused_tokens = [4 * len(c.steps) for c in contexts]
            return super().act(contexts, *a, **k)

    class Counters(Lists):  # the same, as cumulative counters only (DecodeStats)
        stats = SimpleNamespace(prompt_tokens=0, reused_tokens=0)

        def act(self, contexts, *a, **k):
            out = super().act(contexts, *a, **k)
            self.stats.prompt_tokens += sum(self.last_prompt_tokens)
            self.stats.reused_tokens += sum(self.last_reused_tokens)
            del self.last_prompt_tokens, self.last_reused_tokens
            return out

    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(5)]
    exact = rollout(CountingEnv, Lists(), reqs, config=cfg())
    split = rollout(CountingEnv, Counters(), reqs, config=cfg())
    for t in exact.trajectories:
        n = len(t)
        assert t.meta["prompt_tokens"] == 10 * n * (n + 1) // 2
        assert t.meta["prefill_tokens"] == t.meta["prompt_tokens"] - 4 * n * (n - 1) // 2
    for k in ("prompt_tokens", "prefill_tokens"):  # split evenly per call: the sums are exact
        assert sum(t.meta[k] for t in split.trajectories) == \
            sum(t.meta[k] for t in exact.trajectories) == sum(getattr(b, k) for b in split.budgets)
    none = rollout(CountingEnv, CountingPolicy(), reqs[:1], config=cfg())
    assert none.trajectories[0].meta["prompt_tokens"] is None
    assert none.budgets[0].prefill_tokens is None


def test_unknown_tokens_are_none():
    class NoCount(CountingPolicy):
        def act(self, *a, **k):
            out = super().act(*a, **k)
            del self.last_generated_tokens
            return out
    res = rollout(CountingEnv, NoCount(), [RolloutRequest("t1")], config=cfg())
    assert res.trajectories[0].meta["generated_tokens"] is None
    assert res.budgets[0].generated_tokens is None


def test_bad_requests_raise_clear_errors():
    parent = expert_parent()
    with RolloutEngine(CountingEnv, CountingPolicy(), cfg()) as eng:
        with pytest.raises(UnknownTaskError, match="t999"):
            eng.run([RolloutRequest("t999")])
        with pytest.raises(RolloutRequestError, match="samples"):
            eng.run([RolloutRequest("t1", samples=0)])
        with pytest.raises(RolloutRequestError, match="needs a parent"):
            eng.run([RolloutRequest("t1", start_state=2)])
        with pytest.raises(RolloutRequestError, match="steps"):
            eng.run([RolloutRequest(parent.task_id, parent, len(parent) + 1)])
        with pytest.raises(RolloutRequestError, match="task"):
            eng.run([RolloutRequest("t1", parent, 1)])
        with pytest.raises(RolloutRequestError, match="same episode"):
            eng.run([RolloutRequest("t1", seed=3), RolloutRequest("t1", seed=3)])
        with pytest.raises(RolloutRequestError, match="step limit"):  # CountingEnv cannot
            eng.run([RolloutRequest(parent.task_id, parent, 2, fresh_step_limit=True)])
    with pytest.raises(ValueError, match="backend"):
        rollout(CountingEnv, CountingPolicy(), [], config=cfg(backend="nope"))


def test_jsonl_is_written_per_episode_and_a_killed_run_resumes(tmp_path):
    out = tmp_path / "sim.jsonl"
    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(8)]

    class Killed(Exception):
        pass

    class DiesAfter(CountingPolicy):
        def act(self, contexts, sampling=None, seeds=None):
            if len(self.batches) == 12:
                raise Killed()
            return super().act(contexts, sampling, seeds)

    parent = expert_parent()
    reqs += [RolloutRequest(parent.task_id, parent, 0, seed=99),  # state 0: no replay
             RolloutRequest(parent.task_id, parent, 2, samples=2, seed=99)]
    with pytest.raises(Killed):
        rollout(CountingEnv, DiesAfter(noise=0.3), reqs, out, cfg())
    first = read_jsonl(out)
    assert 0 < len(first) < 19  # what finished before the kill is on disk
    with open(out, "a") as f:
        f.write('{"task_id": "t0", "env": "coun')  # a line cut by the kill
    pol = CountingPolicy(noise=0.3)
    res = rollout(CountingEnv, pol, reqs, out, cfg())
    assert res.stats["resumed"] == len(first)
    assert len(res.trajectories) == 19
    on_disk = read_jsonl(out)
    assert len(on_disk) == 19  # no duplicates, the cut line is gone
    keys = {(t.task_id, t.source.start_state, t.source.sample, t.source.seed)
            for t in on_disk}
    assert len(keys) == 19
    # a second rerun has nothing left to do
    again = rollout(CountingEnv, CountingPolicy(noise=0.3), reqs, out, cfg())
    assert again.stats["resumed"] == 19 and len(read_jsonl(out)) == 19
    # the resumed episodes are the ones a single uninterrupted run gives
    full = rollout(CountingEnv, CountingPolicy(noise=0.3), reqs, config=cfg())
    for a, b in zip(res.trajectories, full.trajectories):
        assert same(a, b)


def test_dead_env_is_restarted_and_the_episode_retried():
    # each env instance dies on its 8th step (episodes take 3-7): episodes in flight are retried on a fresh env
    reqs = [RolloutRequest(f"t{i}", seed=i) for i in range(10)]
    res = rollout(lambda: CountingEnv(die_after=8), CountingPolicy(), reqs,
                  config=cfg(num_envs=2, max_retries=3))
    assert not res.failures and len(res.trajectories) == 10
    assert res.stats["retries"] > 0
    retried = [t for t in res.trajectories if t.meta["retries"]]
    assert retried and all("EnvDiedError" in t.meta["errors"][0] for t in retried)
    ref = rollout(CountingEnv, CountingPolicy(), reqs, config=cfg(num_envs=2))
    for a, b in zip(res.trajectories, ref.trajectories):
        assert same(a, b)


def test_episode_failing_every_retry_is_recorded_not_dropped(tmp_path):
    out = tmp_path / "x.jsonl"
    reqs = [RolloutRequest("t1"), RolloutRequest("t2")]
    res = rollout(lambda: CountingEnv(die_after=1), CountingPolicy(), reqs, out,
                  cfg(num_envs=2, max_retries=2))
    assert not res.trajectories and len(res.failures) == 2
    assert failed_path(out) == tmp_path / "x.failed.jsonl"
    recs = [json.loads(line) for line in failed_path(out).read_text().splitlines()]
    assert len(recs) == 2 and {r["task_id"] for r in recs} == {"t1", "t2"}
    for r in recs:
        assert r["done"] is False and r["meta"]["retries"] == 2
        assert "EnvDiedError" in r["meta"]["error"] and len(r["meta"]["errors"]) == 3
    assert out.read_text() == ""  # nothing half-done among the finished episodes


def test_max_episode_steps_truncates():
    res = rollout(CountingEnv, CountingPolicy(), [RolloutRequest("t4")],  # needs 7 steps
                  config=cfg(max_episode_steps=3))
    t = res.trajectories[0]
    assert len(t) == 3 and t.meta["truncated"] and not t.success


def test_threads_and_progress_bar_give_the_same_result():
    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(6)]
    a = rollout(CountingEnv, CountingPolicy(noise=0.3), reqs, config=cfg(threads=2,
                                                                          progress=True))
    b = rollout(CountingEnv, CountingPolicy(noise=0.3), reqs, config=cfg())
    assert all(same(x, y) for x, y in zip(a.trajectories, b.trajectories))


# -- worker processes -------------------------------------------------------------------
class KillerPolicy(CountingPolicy):
    """Kills the worker process of slot 0 at its ``at``-th act call (mid-episode)."""

    def __init__(self, at=3, **kw):
        super().__init__(**kw)
        self.at, self.pool, self.killed = at, None, []

    def act(self, contexts, sampling=None, seeds=None):
        if len(self.batches) == self.at and self.pool is not None:
            pid = self.pool.pids()[0]
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
        return super().act(contexts, sampling, seeds)


def test_process_pool_worker_killed_mid_episode_is_retried():
    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(6)]
    pol = KillerPolicy(at=3, noise=0.2)
    with RolloutEngine(CountingEnv, pol, cfg(num_envs=2, backend="process")) as eng:
        pol.pool = eng.pool
        before = eng.pool.pids()
        res = eng.run(reqs)
        after = eng.pool.pids()
    assert pol.killed == [before[0]] and after[0] != before[0] and after[1] == before[1]
    assert not res.failures and len(res.trajectories) == 12
    retried = [t for t in res.trajectories if t.meta["retries"]]
    assert len(retried) == 1 and "died" in retried[0].meta["errors"][0]
    ref = rollout(CountingEnv, CountingPolicy(noise=0.2), reqs, config=cfg(num_envs=2))
    assert all(same(a, b) for a, b in zip(res.trajectories, ref.trajectories))


@pytest.mark.slow
def test_process_pool_reports_worker_start_failure():
    from eef.envs.base import EnvError
    with pytest.raises((TypeError, EnvError)):
        rollout(_bad_factory, CountingPolicy(), [], config=cfg(num_envs=1, backend="process"))


def _bad_factory():
    return CountingEnv(no_such_argument=1)


def _dying_factory():
    os._exit(3)  # the worker process ends before it can report


@pytest.mark.slow
def test_process_pool_worker_dying_at_start_names_the_usual_cause():
    from eef.envs.base import EnvDiedError
    with pytest.raises(EnvDiedError, match="died while starting.*__main__"):
        rollout(_dying_factory, CountingPolicy(), [], config=cfg(num_envs=1, backend="process"))


@pytest.mark.slow
def test_process_pool_hung_worker_is_killed_and_the_episode_retried(tmp_path):
    flag = tmp_path / "hang"
    flag.touch()
    reqs = [RolloutRequest(f"t{i}", seed=i) for i in range(4)]
    res = rollout(EnvSpecLike(str(flag)), CountingPolicy(), reqs,
                  config=cfg(num_envs=2, backend="process", call_timeout_s=3.0))
    assert not flag.exists()  # one step hung
    assert not res.failures and len(res.trajectories) == 4
    assert res.stats["retries"] == 1
    retried = [t for t in res.trajectories if t.meta["retries"]]
    assert "timed out" in retried[0].meta["errors"][0]


class EnvSpecLike:
    """A picklable factory of hanging counting envs."""

    def __init__(self, flag):
        self.flag = flag

    def __call__(self):
        return CountingEnv(hang_flag=self.flag)


# -- policy replicas (eef.rollout.replicas) ---------------------------------------------------
def test_shard_bounds_cover_in_order():
    from eef.rollout.replicas import shard_bounds
    assert shard_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_bounds(2, 3) == [(0, 1), (1, 2), (2, 2)]
    assert shard_bounds(0, 2) == [(0, 0), (0, 0)]


def test_replicated_policy_answers_like_one_policy():
    from eef.errors import EndpointError
    from eef.rollout.engine import rollout
    from eef.rollout.replicas import ReplicatedPolicy
    made: list[CountingPolicy] = []

    def factory():
        made.append(CountingPolicy(noise=0.3))
        return made[-1]

    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(6)]
    conf = EngineConfig(num_envs=5, progress=False)
    one = rollout(CountingEnv, CountingPolicy(noise=0.3), reqs, config=conf)
    rep = ReplicatedPolicy([factory, factory, factory])
    many = rollout(CountingEnv, rep, reqs, config=conf)
    assert [(t.steps, t.reward, t.source) for t in one.trajectories] == \
        [(t.steps, t.reward, t.source) for t in many.trajectories]
    assert [b.generated_tokens for b in one.budgets] == [b.generated_tokens for b in many.budgets]
    assert all(m.batches for m in made) and sum(rep.calls) == sum(sum(m.batches) for m in made)
    assert min(rep.calls) > 0  # every replica answered
    closed = []
    rep.release_fn = closed.append
    rep.release()
    assert closed == made and rep.replicas == []

    class Short(CountingPolicy):
        def act(self, contexts, sampling=None, seeds=None):
            return super().act(contexts, sampling, seeds)[:-1]

    bad = ReplicatedPolicy([CountingPolicy, Short])
    with pytest.raises(EndpointError, match="replica 1 returned 1 answers for 2"):
        bad.act([run_episode(CountingEnv(), CountingPolicy(), "t4", seed=3).prefix(1)] * 4)
    with pytest.raises(ValueError, match="at least one"):
        ReplicatedPolicy([])
