"""SciWorldEnv on the real simulator (one JVM shared by the module; a small task subset)."""

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from eef.envs.base import EnvDiedError, EpisodeNotStartedError, UnknownTaskError
from eef.envs.sciworld import (NO_ACTION, JavaNotFoundError, SciWorldEnv, SimulatorDiedError,
                               available, protocol as P)
from eef.experts.sciworld import GoldExpert, NoisyExpert, RandomExpert, failure_kind
from eef.rollout.episode import collect, summarize

pytestmark = [pytest.mark.java, pytest.mark.slow,
              pytest.mark.skipif(not available(), reason="no Java runtime for ScienceWorld")]

# fast tasks: short gold paths, quick gold-path generation
PAINT = "sciworld/chemistry-mix-paint-secondary-color/27"
LIFE = "sciworld/lifespan-longest-lived/93"
FIND = "sciworld/find-plant/225"


@pytest.fixture(scope="module")
def env():
    e = SciWorldEnv()
    yield e
    e.close()


@pytest.fixture(scope="module")
def gold(env):
    ex = GoldExpert(env)
    return {t: ex.gold(t) for t in (PAINT, LIFE, FIND)}


def test_java_missing_is_one_clear_error(tmp_path):
    with pytest.raises(JavaNotFoundError, match="install one"):
        SciWorldEnv(java=str(tmp_path / "no-java")).reset(PAINT)


def test_derived_protocol_matches_eto_sizes(env):
    d = P.derive_splits(env.variation_ranges())
    assert {s: len(v) for s, v in d.items()} == {"train": 1513, "dev": 199, "test": 211}
    assert {t for v in d.values() for t, _ in v} == set(P.PROTOCOL_TASKS)
    files = P.read_split_files(env._folder)
    if files is None:
        pytest.skip("no ETO split files in the data dir")
    # test: identical pairs; dev / train: ETO's files drop 5 / 30 pairs (see protocol.py)
    assert sorted(d["test"]) == sorted(files["test"])
    assert len(d["dev"]) - len(files["dev"]) == 5
    assert len(d["train"]) - len(files["train"]) == 30
    per = lambda rows, t: sum(1 for x, _ in rows if x == t)  # noqa: E731
    differ = {t for t in P.PROTOCOL_TASKS
              if per(d["train"], t) != per(files["train"], t)
              or per(d["dev"], t) != per(files["dev"], t)}
    assert differ == {"grow-fruit", "lifespan-longest-lived-then-shortest-lived", "boil",
                      "power-component", "power-component-renewable-vs-nonrenewable-energy"}
    ranges = env.variation_ranges()
    for s in P.SPLITS:  # every file pair names a real variation
        assert all(v < sum(map(len, ranges[t].values())) for t, v in files[s])


def test_tasks_and_ids(env):
    test = env.tasks("test", describe=False)
    assert len(test) == 211 and len({t.id for t in test}) == 211
    pairs = [(t.meta["task_name"], t.meta["variation"]) for t in test[:3]]
    assert all(d.startswith("Your task is") for d in env.describe(pairs))
    assert all(t.meta["described"] for t in env.tasks("test", describe=False)[:3])
    t = env.task("sciworld/task-1-boil/21")  # ETO-style names are accepted
    assert t.id == "sciworld/boil/21" and "boil" in t.instruction
    assert t.meta["task_name"] == "boil" and t.meta["variation"] == 21
    assert t.meta["task_type"] == "1-1" and t.meta["max_steps"] == 100 and t.split == "test"
    all_ = env.tasks("all", describe=False)
    assert len(all_) == 7207 and {x.meta["task_name"] for x in all_} == set(P.ALL_TASKS)
    for bad in ("sciworld/boil/9999", "sciworld/bake/1", "webshop/3", "", None):
        with pytest.raises(UnknownTaskError):
            env.reset(bad)
    with pytest.raises(ValueError, match="splits"):
        env.tasks("val")


def test_episode_scores_and_gold_success(env, gold):
    obs = env.reset(PAINT)
    assert "Your task is" in obs and "This room is called" in obs
    assert env.max_steps == 15  # ETO's limit for this task
    total, r = 0.0, None
    for a in gold[PAINT]:
        r = env.step(a)
        assert r.info["valid"] and 0.0 <= r.reward <= 1.0
        total += r.reward
        if r.done:
            break
    assert r.done and r.info["success"] and r.info["score"] == 1.0 and r.info["raw_score"] == 100
    assert abs(total - 1.0) < 1e-6  # rewards add up to the episode score
    after = env.step("look around")
    assert after.done and not after.info["valid"]


def test_wrong_focus_fails_irrecoverably_and_keeps_the_max(env, gold):
    env.reset(LIFE)
    r = env.step(gold[LIFE][0])
    while r.info["raw_score"] <= 0:
        r = env.step(gold[LIFE][len(env.episode.actions)])
    best = r.info["score"]
    assert best > 0
    r = env.step("focus on agent")
    assert r.done and r.info["raw_score"] == -100 and r.info["failed"]
    assert not r.info["success"] and r.info["score"] == best and r.reward == 0.0
    final = SciWorldEnv(score="final")
    final._sim, final._ranges = env._sim, env._ranges  # share the JVM
    final.reset(LIFE)
    r = final.step("focus on agent")
    assert r.done and r.info["score"] == 0.0 and r.info["raw_score"] == -100


@pytest.mark.parametrize("bad", ["", "   ", "fly to the moon", "x" * 100_000,
                                 "click[\udcff\u202e\u0000]", "\u00e9\u4e2d\U0001f600 open",
                                 "reset task"])
def test_malformed_actions_are_invalid_steps(env, bad):
    env.reset(FIND)
    r = env.step(bad)
    assert r.observation == NO_ACTION and r.info["valid"] is False and not r.done
    assert r.info["steps"] == 1


def test_step_limit_counts_invalid_steps(env):
    env.reset(FIND)
    for i in range(15):
        r = env.step("")
    assert r.done and r.info["truncated"] and r.info["success"] is False and i == 14
    # counted from a later state (EEF's method.sim_steps: full): 15 more steps from step 10
    env.reset(FIND)
    for _ in range(10):
        env.step("")
    env.restart_step_limit()
    done = [env.step("").done for _ in range(15)]
    assert done == [False] * 14 + [True] and env.max_steps == 25


def test_step_before_reset():
    with pytest.raises(EpisodeNotStartedError):
        SciWorldEnv().step("look around")


def test_available_actions_are_lazy_and_valid(env):
    env.reset(FIND)
    acts = env.available_actions()
    assert "look around" in acts and len(acts) > 50
    assert env.step("look around").info["valid"]


def test_replay_reports_match(env, gold):
    env.reset(PAINT)
    obs = [env.step(a).observation for a in gold[PAINT][:4]]
    rep = env.replay(PAINT, gold[PAINT][:4], obs)
    assert rep.match in ("exact", "unordered") and len(rep.results) == 4
    rep = env.replay(PAINT, gold[PAINT][:2], ["something else", obs[1]])
    assert rep.match == "different" and rep.first_divergence == 0


def test_replay_retries_a_different_replay(env, gold):
    rep = env.replay(PAINT, gold[PAINT][:2], ["nope", "nope"], retries=2)
    assert rep.match == "different" and rep.attempts == 3
    env.reset(PAINT)
    obs = [env.step(a).observation for a in gold[PAINT][:2]]
    assert env.replay(PAINT, gold[PAINT][:2], obs, retries=2).attempts == 1


def test_protocol_derived_without_files(env, tmp_path):
    e = SciWorldEnv(data_dir=str(tmp_path))
    e._ranges = env._ranges
    assert e.protocol_source() == "derived"
    assert {s: len(v) for s, v in e.splits().items()} == {"train": 1513, "dev": 199,
                                                          "test": 211}
    assert e.task_limit("boil") == 100 and e.task_limit("inclined-plane-determine-angle") == 100
    assert SciWorldEnv(data_dir=str(tmp_path), max_steps=7).task_limit("boil") == 7
    with pytest.raises(P.ProtocolError, match="protocol='derived'"):
        SciWorldEnv(data_dir=str(tmp_path), protocol="files").splits()


def test_gold_path_is_cached_on_disk(env, gold):
    env.gold._mem.clear()
    t0 = time.perf_counter()
    cached = env.gold.get("chemistry-mix-paint-secondary-color", 27)
    assert env.gold_actions(PAINT) == cached
    assert time.perf_counter() - t0 < 0.5


def test_gold_generation_mid_episode_restores_the_episode(env, tmp_path):
    from eef.envs.sciworld.gold import GoldCache
    env.reset(FIND)
    env.step("look around")
    saved, env.gold = env.gold, GoldCache("easy", folder=tmp_path)  # force a generation
    try:
        assert env.gold_actions(LIFE)
    finally:
        env.gold = saved
    assert env.episode.task == "find-plant" and env.episode.steps == 1


def test_conformance_checker(env, gold):
    from eef.envs.checker import check_env
    check_env(env, [PAINT, LIFE], actions_for=lambda t: gold[t], allow_unordered=True)


def test_experts_through_collect(env, tmp_path):
    ids = [PAINT, LIFE, FIND]
    out = tmp_path / "gold.jsonl"
    trajs = collect(env, GoldExpert(env), ids, out, progress=False)
    s = summarize(trajs)
    assert s["n"] == 3 and s["win_rate"] == 1.0 and s["mean_score"] == 100.0
    assert all(st.thought and st.valid for t in trajs for st in t.steps)
    assert trajs[0].source.policy == "expert:gold"
    noisy = NoisyExpert(env, wrong_focus=1.0)
    bad = collect(env, noisy, ids, progress=False)
    assert not any(t.success for t in bad)
    assert {failure_kind(t, noisy) for t in bad} == {"wrong_focus"}
    assert all(t.steps[-1].observation and t.done for t in bad)
    rnd = collect(env, RandomExpert(env), ids[:1], progress=False, seed=3)
    assert rnd[0].done and len(rnd[0].steps) >= 1


def test_simulation_from_a_failed_expert_prefix(env):
    """EEF's use: replay the prefix of a failed expert trajectory, then let a policy go on."""
    from eef.rollout.episode import run_episode
    noisy = NoisyExpert(env, wrong_focus=1.0, wrong_object=0, skip=0, detour=0)
    failed = run_episode(env, noisy, LIFE)
    assert not failed.success and failed.steps[-1].observation
    (k, kind), = noisy.errors(LIFE)
    assert kind == "wrong_focus" and k >= 1
    sim = run_episode(env, GoldExpert(env), LIFE, prefix=failed.prefix(k))
    assert sim.success and sim.source.start_state == k
    assert sim.meta["replay_match"] in ("exact", "unordered")
    assert sim.actions[:k] == failed.actions[:k]


def test_jvm_killed_mid_episode_raises_one_typed_error(env):
    e = SciWorldEnv()
    e._ranges = env._ranges
    e.reset(FIND)
    proc = e.sim.proc
    proc.kill()
    proc.wait(timeout=10)
    with pytest.raises(SimulatorDiedError) as exc:
        e.step("look around")
    assert isinstance(exc.value, EnvDiedError) and "died" in str(exc.value)
    assert proc.poll() is not None
    assert "This room is called" in e.reset(FIND)  # the env restarts a fresh JVM
    assert e.jvm_pid != proc.pid
    pid = e.jvm_pid
    e.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_no_orphan_jvm_after_python_is_killed(tmp_path):
    code = textwrap.dedent("""
        import sys, time
        from eef.envs.sciworld import SciWorldEnv
        e = SciWorldEnv()
        e.sim  # start the JVM
        print(e.jvm_pid, flush=True)
        time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(p.stdout.readline())
        assert psutil.Process(pid).name().startswith("java")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.time() + 15
        while time.time() < deadline and psutil.pid_exists(pid) and \
                psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.2)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        p.stdout.close()
