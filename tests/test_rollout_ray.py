"""The Ray backend on a local Ray instance started by the test: same trajectories as the local
backend for the same seeds, and a killed env actor's episode is retried."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (optional extra: pip install 'eef[ray]')")

sys.path.insert(0, str(Path(__file__).parent))
import rollout_fakes  # noqa: E402
from rollout_fakes import CountingEnv, CountingPolicy  # noqa: E402

from eef.algorithms.labels import simulation_requests  # noqa: E402
from eef.rollout.engine import EngineConfig, RolloutEngine, RolloutRequest, rollout  # noqa: E402
from eef.rollout.episode import run_episode  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster per module


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the actors must build the test env: ship its module by value
    ray.cloudpickle.register_pickle_by_value(rollout_fakes)
    yield
    if started:
        ray.shutdown()


def same(a, b):
    return (a.task_id, a.initial_observation, a.steps, a.reward, a.success, a.source) == \
        (b.task_id, b.initial_observation, b.steps, b.reward, b.success, b.source)


def test_ray_backend_matches_local(local_ray):
    parent = run_episode(CountingEnv(), CountingPolicy(), "t4", seed=3)  # 7 steps
    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(8)]
    reqs += simulation_requests(parent, M=2, samples=2, seed=9)
    conf = dict(num_envs=2, progress=False)
    a = rollout(rollout_fakes.CountingEnv, CountingPolicy(noise=0.3), reqs,
                config=EngineConfig(backend="ray", **conf))
    b = rollout(rollout_fakes.CountingEnv, CountingPolicy(noise=0.3), reqs,
                config=EngineConfig(backend="local", **conf))
    assert len(a.trajectories) == len(b.trajectories) == sum(r.samples for r in reqs)
    assert any(t.source.start_state > 0 for t in a.trajectories)
    assert all(same(x, y) for x, y in zip(a.trajectories, b.trajectories))


def test_ray_actor_killed_mid_episode_is_retried(local_ray):
    class Killer(CountingPolicy):
        pool = None

        def act(self, contexts, sampling=None, seeds=None):
            if len(self.batches) == 2:
                ray.kill(self.pool.actors[1], no_restart=True)
            return super().act(contexts, sampling, seeds)

    reqs = [RolloutRequest(f"t{i}", seed=i) for i in range(6)]
    pol = Killer()
    with RolloutEngine(rollout_fakes.CountingEnv, pol,
                       EngineConfig(num_envs=2, backend="ray", progress=False)) as eng:
        pol.pool = eng.pool
        res = eng.run(reqs)
    assert not res.failures and len(res.trajectories) == 6
    assert res.stats["retries"] == 1
    ref = rollout(rollout_fakes.CountingEnv, CountingPolicy(), reqs,
                  config=EngineConfig(num_envs=2, progress=False))
    assert all(same(x, y) for x, y in zip(res.trajectories, ref.trajectories))


def test_policy_replicas_as_ray_actors(local_ray):
    """Policy replicas in Ray actors (as for one vLLM server per node) answer like one policy;
    a dead replica is a clear EndpointError."""
    from functools import partial

    from eef.errors import EndpointError
    from eef.rollout.replicas import ReplicatedPolicy
    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(6)]
    conf = EngineConfig(num_envs=4, progress=False)
    factory = partial(CountingPolicy, noise=0.3, spec="test:replica")
    rep = ReplicatedPolicy([factory, factory], "ray", num_cpus=0)
    try:
        assert rep.spec == "test:replica"
        a = rollout(rollout_fakes.CountingEnv, rep, reqs, config=conf)
        b = rollout(rollout_fakes.CountingEnv, factory(), reqs, config=conf)
        assert all(same(x, y) for x, y in zip(a.trajectories, b.trajectories))
        assert [x.generated_tokens for x in a.budgets] == [x.generated_tokens for x in b.budgets]
        assert min(rep.calls) > 0
        ray.kill(rep.replicas[1].actor, no_restart=True)
        with pytest.raises(EndpointError, match="policy replica died"):
            rollout(rollout_fakes.CountingEnv, rep, reqs, config=conf)
    finally:
        rep.release()
