"""The EEF and RFT×N glue (eef/algorithms/eef.py, rft.py) on WebShop with scripted agents: the
exact samples, labels and loss masks that reach the training set.  Training is stubbed out (the
agent is scripted, it learns nothing); everything else is the pipeline's own code."""

from __future__ import annotations

import dataclasses
import json

import pytest

from eef.algorithms import policies, stages
from eef.algorithms.config import load_config, to_dict
from eef.algorithms.context import Context, make_env
from eef.algorithms.rundir import RunDir
from eef.experts import make_expert
from eef.rollout.episode import run_episode
from eef.trajectory import read_jsonl, write_jsonl
from test_models_util import TINY

pytestmark = pytest.mark.needs_data

MAX_STEPS, M = 8, 3  # an 8-step expert trajectory: simulated states s_0, s_2, s_4, s_6
LOST = "Thought: I am lost.\nAction: click[nothing]"


class Wanderer:
    """An expert that searches and goes back until it runs out of steps (it fails)."""

    spec = "test:wanderer"

    def __init__(self, query: str):
        self.query = query

    def act(self, contexts, sampling=None, seeds=None):
        return ["Action: click[back to search]" if len(c.steps) % 2 else
                f"Action: search[{self.query} {len(c.steps)}]" for c in contexts]


class FromStates:
    """An agent lost from s_0 that plays the oracle from the expert states in ``wins``."""

    spec = "test:from-states"

    def __init__(self, env, wins):
        self.oracle, self.wins = make_expert(env, "oracle"), set(wins)

    def act(self, contexts, sampling=None, seeds=None):
        seeds = list(seeds or [0] * len(contexts))
        return [self.oracle.act([c], sampling, [s])[0]
                if int(c.source.start_state or 0) in self.wins else LOST
                for c, s in zip(contexts, seeds)]


class Detours:
    """From s_0, by sample index: 0 and 2 the oracle's path, 1 the oracle with a look at the
    description first (a longer success), 3 lost."""

    spec = "test:detours"

    def __init__(self, env):
        self.oracle = make_expert(env, "oracle")

    def act(self, contexts, sampling=None, seeds=None):
        out = []
        for c, s in zip(contexts, list(seeds or [0] * len(contexts))):
            i = int(c.source.sample or 0)
            if i == 3:
                out.append(LOST)
            elif i == 1 and "Buy Now" in c.observation and "click[description]" not in c.actions:
                out.append("Action: click[description]")  # the oracle then goes back
            else:
                out.append(self.oracle.act([c], sampling, [s])[0])
        return out


@pytest.fixture(scope="module")
def webshop():
    from eef.envs import make
    env = make("webshop", max_steps=MAX_STEPS)
    yield env
    env.close()


@pytest.fixture(scope="module")
def tasks(webshop):
    """A task whose wanderer trajectory fails in 8 steps and from whose s_2 the oracle
    succeeds (so from every even state, given the steps), and one the oracle solves."""
    oracle = make_expert(webshop, "oracle")
    for t in webshop.tasks("train")[:40]:
        tau = run_episode(webshop, Wanderer("something"), t.id)
        sol = run_episode(webshop, oracle, t.id, prefix=tau.prefix(2))
        if len(tau) == MAX_STEPS and sol.success and len(sol) - 2 <= MAX_STEPS - 3:
            other = next(x.id for x in webshop.tasks("train")[40:]
                         if run_episode(webshop, oracle, x.id).success)
            return t.id, other
    raise AssertionError("no suitable task")


def _context(tmp_path, webshop, tasks, monkeypatch, policy, overrides, experts=("a", "b")):
    """A Context over the two tasks, experts imported from files (one per name in
    ``experts``: a wanderer on the first task, the oracle on the other), the scripted
    ``policy`` as every stage's agent and training stubbed out."""
    hard, easy = tasks
    files = []
    for name in experts:
        f = tmp_path / f"{name}.jsonl"
        write_jsonl(f, [run_episode(webshop, Wanderer(f"query {name}"), hard),
                        run_episode(webshop, make_expert(webshop, "oracle"), easy)])
        files.append(str(f))
    cfg = load_config(TINY, [f"env.options={{max_steps: {MAX_STEPS}}}", f"method.M={M}",
                             "method.iterations=1", "rollout.num_envs=2",
                             "rollout.progress=false", f"expert.trajectories={files}",
                             *overrides])
    run = RunDir(tmp_path / "run", to_dict(cfg))
    env = make_env(cfg)
    (tmp_path / "base").mkdir()
    ctx = Context(cfg, run, env, sorted(tasks), sorted(tasks), [hard],
                  stages.expert_stage(cfg, run, env, sorted(tasks)), tmp_path / "base")

    def train(init, data, out, cfg, progress=False):
        out.mkdir(parents=True, exist_ok=True)
        return {"steps": 0}

    monkeypatch.setattr("eef.models.train.train_sft", train)
    monkeypatch.setattr(policies, "load_model_policy", lambda ctx, model: policy)
    monkeypatch.setattr(policies, "release_policy", lambda pol: None)
    return ctx


@pytest.mark.parametrize("sim_steps", ["full", "remaining"])
def test_eef_finds_beneficial_and_harmful_actions_and_a_recovery_state(
        tmp_path, webshop, tasks, monkeypatch, sim_steps):
    from eef.algorithms.eef import run_eef
    ctx = _context(tmp_path, webshop, tasks, monkeypatch, FromStates(webshop, {2, 6}),
                   [f"method.sim_steps={sim_steps}"])
    run_eef(ctx)
    hard, easy = tasks
    experts = {t.source.id: t for t in ctx.experts}
    assert sorted(experts) == sorted(f"expert/{f}/{t}" for f in ctx.cfg.expert.sources()
                                     for t in tasks)
    # both experts' trajectories of the hard task were labelled, each on its own
    records = [json.loads(x) for x in (ctx.run / "labels/eef-it1.jsonl").open()]
    assert [(r["task_id"], r["expert"]) for r in records] == \
        [(hard, e) for e in ctx.cfg.expert.sources()]
    B, H, N, U = "beneficial", "harmful", "neutral", "unused"
    for r in records:
        assert r["states"] == [0, 2, 4, 6] and r["important"] == [0, 4]
        if sim_steps == "full":
            assert r["solved"] == [False, True, False, True]
            assert r["labels"] == [B, B, H, H, B, B, U, U] and r["samples"] == 2
        else:  # s_6 has 2 steps left: it looks unsolvable, s_4 a recovery state with no sample
            assert r["solved"] == [False, True, False, False]
            assert r["labels"] == [B, B, H, H, N, N, U, U] and r["samples"] == 1
    # the training set: the expert's successes, then the EEF samples with their masks
    data = read_jsonl(ctx.run / "data/eef/it1.jsonl")
    assert all(t.source.expert and t.task_id == easy and t.success for t in data[:2])
    samples = data[2:]
    want = [(r["parent"], k) for r in records for k in ((0, 4) if sim_steps == "full" else (0,))]
    assert sorted((t.source.parent, t.meta["important_state"]) for t in samples) == sorted(want)
    for t in samples:
        tau = experts[t.source.parent]
        assert t.source.expert == tau.source.expert and t.success
        start = {0: 2, 4: 6}[t.meta["important_state"]]
        assert t.source.start_state == start and t.meta["recovery"] == (start == 6)
        assert t.actions[:start] == tau.actions[:start]
        agent = len(t) - start
        assert agent > 0 and t.actions[-1] == "click[buy now]"
        if start == 2:
            assert [s.label for s in t.steps] == [B, B] + ["agent"] * agent
            assert all(s.train for s in t.steps)
        else:  # the harmful a_2, a_3 are masked out of the loss
            assert [s.label for s in t.steps] == [B, B, H, H, B, B] + ["agent"] * agent
            assert [s.train for s in t.steps] == [True, True, False, False, True, True] + \
                [True] * agent
    row = next(r for r in ctx.run.metrics() if r["stage"] == "eef/it1/budget")
    assert row["new_eef_samples"] == len(samples)
    assert row["new_recovery_samples"] == (2 if sim_steps == "full" else 0)
    b = row["budget_sim"]
    assert b["episodes"] == 2 * 3 and b["replay_steps"] == 2 * (2 + 4 + 6)
    if sim_steps == "remaining":  # policy steps never pass the env's limit from s_0
        assert b["env_steps"] <= 2 * ((MAX_STEPS - 2) + (MAX_STEPS - 4) + (MAX_STEPS - 6))
    sims = read_jsonl(ctx.run / "rollouts/eef/it1/sim.jsonl")
    lost = [t for t in sims if t.source.start_state == 4]
    assert {len(t) - 4 for t in lost} == {MAX_STEPS if sim_steps == "full" else MAX_STEPS - 4}


@pytest.mark.parametrize("keep, kept", [("shortest", ["straight"]),
                                        ("distinct", ["straight", "detour"]),
                                        ("all", ["straight", "detour", "straight"])])
def test_rft_xn_keeps_the_successes_its_rule_says(tmp_path, webshop, tasks, monkeypatch, keep,
                                                  kept):
    from eef.algorithms.pipeline import run_method
    ctx = _context(tmp_path, webshop, tasks, monkeypatch, Detours(webshop),
                   ["method.rft_n=4", f"method.rft_keep={keep}"], experts=("a",))
    run_method(ctx, "rft_xn")
    rolled = read_jsonl(ctx.run / "rollouts/rft_xn/it1/s0.jsonl")
    assert len(rolled) == 4 * 2 and sum(t.success for t in rolled) == 3 * 2
    data = read_jsonl(ctx.run / "data/rft_xn/it1.jsonl")
    assert data[0].source.expert and data[0].success  # the expert's one success
    for task in tasks:
        got = [t for t in data[1:] if t.task_id == task]
        assert ["detour" if "click[description]" in t.actions else "straight" for t in got] \
            == kept
        assert all(t.success and all(s.train for s in t.steps) for t in got)
        if keep != "shortest":
            assert [t.source.sample for t in got] == [0, 1, 2][:len(kept)]
    row = next(r for r in ctx.run.metrics() if r["stage"] == "rft_xn/it1/budget")
    assert row["n"] == 4 and row["positives"] == 2 * len(kept)
    assert row["budget_it"] == row["budget"] and row["budget"]["episodes"] == 8


def test_several_experts_are_collected_and_kept_apart(tmp_path, webshop):
    from eef.algorithms.config import ConfigError
    cfg = load_config(TINY, ["env.options={max_steps: 10}", "rollout.progress=false",
                             "expert.policies=[expert:heuristic, expert:noisy]"])
    run, env = RunDir(tmp_path / "run", to_dict(cfg)), make_env(cfg)
    ids = [t.id for t in webshop.tasks("train")[:6]]
    got = stages.expert_stage(cfg, run, env, ids)
    assert [(t.source.expert, t.task_id) for t in got] == \
        [(e, t) for e in ("expert:heuristic", "expert:noisy") for t in ids]
    assert len({t.source.id for t in got}) == 12
    assert [t.actions for t in got[:6]] != [t.actions for t in got[6:]]  # the noisy one slips
    assert stages.expert_stage(cfg, run, env, ids) == got  # resumed: the same trajectories
    for bad, msg in ((["expert.policies=[expert:heuristic, expert:heuristic]"], "twice"),
                     (["expert.policies=[expert:heuristic]", "expert.trajectories=x.jsonl"],
                      "both set"),
                     (["expert.trajectories=[1, 2]"], "list of files"),
                     (["expert.policies=expert:heuristic"], "expected list")):
        with pytest.raises(ConfigError, match=msg):
            load_config(TINY, bad)


def test_an_imported_file_keeps_every_trajectory_of_a_task(tmp_path, webshop, tasks):
    hard, easy = tasks
    f = tmp_path / "x.jsonl"
    write_jsonl(f, [run_episode(webshop, Wanderer(q), t) for q in ("a", "b") for t in tasks])
    cfg = load_config(TINY, [f"expert.trajectories={f}", "rollout.progress=false"])
    got = stages.expert_stage(cfg, RunDir(tmp_path / "run", to_dict(cfg)), webshop, [hard, easy])
    assert [t.source.id for t in got] == [f"expert/{hard}", f"expert/{hard}#2",
                                             f"expert/{easy}", f"expert/{easy}#2"]
    with pytest.raises(ValueError, match="no trajectory for 1 training task"):
        stages.expert_stage(cfg, RunDir(tmp_path / "r2", to_dict(cfg)), webshop,
                            [hard, "webshop/nope"])


def test_the_expert_is_evaluated_on_the_eval_goals_once(tmp_path, webshop, tasks):
    from eef.algorithms.pipeline import summary_rows
    cfg = load_config(TINY, ["env.options={max_steps: 10}", "rollout.progress=false"])
    run, env = RunDir(tmp_path / "run", to_dict(cfg)), make_env(cfg)
    goals = [t.id for t in webshop.tasks("test")[:4]]
    ctx = Context(cfg, run, env, eval_ids=goals)
    (row,) = stages.expert_eval_stage(ctx)
    got = read_jsonl(run / "rollouts/eval/expert.jsonl")
    assert [t.task_id for t in got] == goals and row["n"] == 4
    assert (row["stage"], row["method"], row["policy"], row["split"]) == \
        ("expert/eval", "expert", "expert:heuristic", "test")
    assert row["win_rate"] == sum(t.success for t in got) / 4
    rec = (run / "stages/expert__eval.json").stat().st_mtime_ns
    assert stages.expert_eval_stage(ctx) == [row]  # resumed: not run again, no second row
    assert (run / "stages/expert__eval.json").stat().st_mtime_ns == rec
    assert [r["stage"] for r in run.metrics()] == ["expert/eval"]
    assert [r["what"] for r in summary_rows(run)] == ["expert (eval)"]
    # several experts: one evaluation each; imported trajectories: none (no policy to run)
    two = load_config(TINY, ["env.options={max_steps: 10}", "rollout.progress=false",
                             "expert.policies=[expert:heuristic, expert:random]"])
    ctx2 = Context(two, RunDir(tmp_path / "run2", to_dict(two)), env, eval_ids=goals[:2])
    rows = stages.expert_eval_stage(ctx2)
    assert [(r["stage"], r["method"], r["policy"]) for r in rows] == [
        ("expert/eval/0", "expert/0", "expert:heuristic"),
        ("expert/eval/1", "expert/1", "expert:random")]
    assert (ctx2.run / "rollouts/eval/expert/1.jsonl").is_file()
    f = tmp_path / "x.jsonl"
    write_jsonl(f, got)
    imp = load_config(TINY, [f"expert.trajectories={f}", "rollout.progress=false"])
    assert stages.expert_eval_stage(Context(imp, RunDir(tmp_path / "run3", to_dict(imp)), env,
                                            eval_ids=goals)) == []
    env.close()


def test_continuing_after_an_iteration_that_found_nothing_keeps_the_model(
        tmp_path, webshop, tasks, monkeypatch):
    """train_from continue without the expert's successes: an agent that never succeeds
    leaves nothing to train on, and the iteration's model is the SFT model itself."""
    from eef.algorithms.eef import run_eef

    class Lost:
        spec = "lost"

        def act(self, contexts, sampling=None, seeds=None):
            return [LOST] * len(contexts)

    ctx = _context(tmp_path, webshop, tasks, monkeypatch, Lost(),
                   ["method.train_from=continue", "method.keep_expert_successes=false"])
    model = run_eef(ctx)
    assert model == ctx.run / "models/sft"
    rows = {r["stage"]: r for r in ctx.run.metrics()}
    assert rows["train/eef/it1"]["examples"] == 0 and rows["train/eef/it1"]["same_as"] == "init"
    assert rows["eval/eef/it1"]["win_rate"] == rows["eval/sft"]["win_rate"] == 0.0


def test_iteration_lr_trains_the_iterations_at_their_own_rate(tmp_path, webshop, tasks,
                                                              monkeypatch):
    """method.iteration_lr: the SFT stage trains at train.lr, every iteration at its own rate,
    and the rate is part of the stage's key (a changed rate retrains)."""
    from eef.algorithms.eef import run_eef
    ctx = _context(tmp_path, webshop, tasks, monkeypatch, FromStates(webshop, {2, 6}),
                   ["method.iteration_lr=0.00001", "method.train_from=continue"])
    seen = {}

    def train(init, data, out, cfg, progress=False):
        out.mkdir(parents=True, exist_ok=True)
        seen[out.name] = cfg.lr
        return {"steps": 0}

    monkeypatch.setattr("eef.models.train.train_sft", train)
    run_eef(ctx)
    assert seen == {"sft": ctx.cfg.train.lr, "it1": 0.00001}
    keys = {r["stage"]: r["key"] for r in ctx.run.metrics() if "key" in r}
    other = dataclasses.replace(ctx, cfg=dataclasses.replace(
        ctx.cfg, method=dataclasses.replace(ctx.cfg.method, iteration_lr=0.00002)))
    seen.clear()
    run_eef(other)
    assert seen == {"it1": 0.00002}
    assert [r["key"] for r in ctx.run.metrics() if r.get("stage") == "train/eef/it1"][-1] \
        != keys["train/eef/it1"]
