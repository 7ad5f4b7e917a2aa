"""The env server (eef.envs.server) and its client ``HttpEnv`` (eef.envs.http)."""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rollout_fakes import CountingEnv, CountingPolicy  # noqa: E402

from eef.envs import make  # noqa: E402
from eef.envs.base import EnvDiedError, EnvError, EpisodeNotStartedError, UnknownTaskError  # noqa: E402
from eef.envs.http import HttpEnv, SessionLimitError, SessionLostError  # noqa: E402
from eef.envs.server import ServerConfig, ServerThread, create_app  # noqa: E402
from eef.rollout.engine import EngineConfig, RolloutRequest, rollout  # noqa: E402
from eef.rollout.episode import run_episode  # noqa: E402


@pytest.fixture
def server():
    with ServerThread(create_app(CountingEnv, ServerConfig(max_sessions=8))) as url:
        yield url


def test_http_env_plays_like_the_local_env(server):
    env = make("http", url=server, env="counting")  # the registry entry
    local = CountingEnv()
    assert env.name == "counting" and env.max_steps == local.max_steps
    assert [t.id for t in env.tasks()] == [t.id for t in local.tasks()]
    assert env.task("t3") == local.task("t3")
    pol = CountingPolicy(noise=0.4)
    for i in range(6):
        a = run_episode(env, pol, f"t{i}", seed=i)
        b = run_episode(local, pol, f"t{i}", seed=i)
        assert (a.initial_observation, a.steps, a.reward, a.success) == \
            (b.initial_observation, b.steps, b.reward, b.success)
    assert env.available_actions() == ["inc", "dec", "submit"]
    rep = env.replay("t3", ["inc", "inc", "dec"], ["count=1", "count=2", "count=9"])
    assert rep.match == "different" and rep.first_divergence == 2
    assert rep.observation == "count=1" and rep.initial_observation == "t3: count=0"
    env.close()
    env.close()  # idempotent


def test_errors_map_back_to_the_env_contract(server):
    env = HttpEnv(server)
    with pytest.raises(EpisodeNotStartedError):
        env.step("inc")
    with pytest.raises(UnknownTaskError, match="t999"):
        env.reset("t999")
    with pytest.raises(UnknownTaskError):
        env.task("nope")
    with pytest.raises(EnvError, match="serves env 'counting'"):
        HttpEnv(server, env="webshop")
    with pytest.raises(EnvError, match="kwargs"):
        HttpEnv(server, max_steps=3)  # the server does not take client kwargs
    sid = env.session
    assert httpx.delete(f"{server}/sessions/{sid}").status_code == 200
    with pytest.raises(SessionLostError, match="unknown session"):
        env.reset("t1")
    r = httpx.post(f"{server}/sessions/nope/step", json={"action": "inc"})
    assert r.status_code == 404 and r.json()["error"] == "unknown_session"
    r = httpx.post(f"{server}/sessions/nope/step", json={"wrong": 1})
    assert r.status_code == 422
    env.close()


@pytest.mark.slow
def test_session_limit_idle_timeout_and_body_limit():
    conf = ServerConfig(max_sessions=2, idle_timeout_s=0.3, max_body_bytes=4096)
    with ServerThread(create_app(CountingEnv, conf)) as url:
        a, b = HttpEnv(url), HttpEnv(url)
        with pytest.raises(SessionLimitError, match="limit"):
            HttpEnv(url)
        a.reset("t1")
        time.sleep(1.0)  # both idle for longer than the timeout: reaped
        deadline = time.monotonic() + 20  # the reaper thread may lag on a loaded machine
        while (health := httpx.get(f"{url}/health").json())["sessions"] and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert health["sessions"] == 0 and health["reaped"] == 2
        with pytest.raises(SessionLostError):
            a.step("inc")
        HttpEnv(url).close()  # room again
        for e in (a, b):
            e.close()  # already reaped: closing is a no-op
    # body limits, on a server whose sessions do not expire mid-test on a loaded machine
    conf = ServerConfig(max_sessions=2, max_body_bytes=4096)
    with ServerThread(create_app(CountingEnv, conf)) as url:
        c = HttpEnv(url)
        c.reset("t1")
        big = {"action": "x" * 10_000}
        r = httpx.post(f"{url}/sessions/{c.session}/step", json=big)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"

        def chunks():
            for _ in range(10):
                yield b"x" * 1000
        r = httpx.post(f"{url}/sessions/{c.session}/step", content=chunks())
        assert r.status_code == 413
        assert c.step("inc").observation == "count=1"  # the session is unaffected
        c.close()


def test_server_bound_to_loopback_by_default():
    assert ServerConfig().host == "127.0.0.1"


def test_server_gone_raises_env_died():
    with ServerThread(create_app(CountingEnv)) as url:
        env = HttpEnv(url)
        env.reset("t1")
    with pytest.raises(EnvDiedError, match="unreachable"):
        env.step("inc")


def test_dead_server_side_env_is_reported_and_its_session_dropped():
    with ServerThread(create_app(lambda: CountingEnv(die_after=2))) as url:
        env = HttpEnv(url)
        env.reset("t1")
        env.step("inc")
        with pytest.raises(EnvDiedError, match="died"):
            env.step("inc")
        assert httpx.get(f"{url}/health").json()["sessions"] == 0
        with pytest.raises(SessionLostError):
            env.step("inc")


def test_engine_over_http_envs_matches_local(server):
    reqs = [RolloutRequest(f"t{i}", samples=2, seed=i) for i in range(6)]
    conf = EngineConfig(num_envs=4, progress=False)
    a = rollout(lambda: HttpEnv(server), CountingPolicy(noise=0.3), reqs, config=conf)
    b = rollout(CountingEnv, CountingPolicy(noise=0.3), reqs, config=conf)
    assert [(t.steps, t.reward) for t in a.trajectories] == \
        [(t.steps, t.reward) for t in b.trajectories]
    assert httpx.get(f"{server}/health").json()["sessions"] == 0  # the engine closed them


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_load_64_concurrent_clients_no_errors_bounded_memory():
    """64 clients at once, two waves; the second wave must not grow the process (the server
    runs in this process)."""
    conf = ServerConfig(max_sessions=64, idle_timeout_s=60)
    errors: list[BaseException] = []
    done = []

    def client(i: int) -> None:
        try:
            env = HttpEnv(url, timeout_s=60)
            pol = CountingPolicy(noise=0.2)
            for j in range(3):
                t = run_episode(env, pol, f"t{(i + j) % 20}", seed=i * 10 + j)
                assert t.done and len(t) >= 1
                done.append(t.success)
            env.close()
        except BaseException as e:  # collected and reported by the test
            errors.append(e)

    def wave() -> None:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not any(t.is_alive() for t in threads), "clients hung"

    proc = psutil.Process()
    with ServerThread(create_app(CountingEnv, conf)) as url:
        wave()
        gc.collect()
        rss1 = proc.memory_info().rss
        wave()
        gc.collect()
        rss2 = proc.memory_info().rss
        health = httpx.get(f"{url}/health").json()
    assert not errors, errors[:3]
    assert len(done) == 2 * 64 * 3
    assert health["sessions"] == 0 and health["created"] == 128
    assert rss2 - rss1 < 40 * 2**20, f"RSS grew by {(rss2 - rss1) / 2**20:.1f} MB"


@pytest.mark.needs_data
def test_webshop_over_http_matches_in_process():
    from eef.experts import make_expert
    local = make("webshop")
    tasks = [t.id for t in local.tasks("test")[:5]]
    with ServerThread(create_app("webshop")) as url:
        env = HttpEnv(url, env="webshop")
        assert env.task(tasks[0]) == local.task(tasks[0])
        pol = make_expert(local, "heuristic")
        for tid in tasks:
            a, b = run_episode(env, pol, tid), run_episode(local, pol, tid)
            assert (a.steps, a.reward, a.success) == (b.steps, b.reward, b.success)
        # the step limit counted from a later state (EEF's method.sim_steps: full)
        assert env.restarts_step_limit
        env.replay(tasks[0], ["click[nothing]"] * (local.max_steps - 1))
        env.restart_step_limit()
        assert not any(env.step("click[nothing]").done for _ in range(local.max_steps - 1))
        assert env.step("click[nothing]").done
        env.close()
    with ServerThread(create_app(CountingEnv)) as url:
        env = HttpEnv(url)
        assert not env.restarts_step_limit
        env.reset("t1")
        with pytest.raises(EnvError, match="step limit"):
            env.restart_step_limit()
        env.close()


def test_client_kwargs_only_when_the_server_allows_them():
    with ServerThread(create_app(CountingEnv, ServerConfig(allow_client_kwargs=True))) as url:
        env = HttpEnv(url, max_steps=2)
        assert env.max_steps == 2
        env.reset("t4")
        env.step("inc")
        assert env.step("inc").done  # the server-side env got max_steps=2
        env.close()
