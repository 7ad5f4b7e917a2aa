"""The stages every method is made of, each resumable in the run directory: the expert
trajectories, the base model, fine-tuning, rollouts and evaluation."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from eef.algorithms import policies
from eef.algorithms.config import ExperimentConfig, to_dict
from eef.algorithms.context import Context
from eef.algorithms.rundir import RunDir, digest, model_key
from eef.envs.base import TextEnv
from eef.policy import Sampling
from eef.rollout.budget import Budget
from eef.rollout.engine import EngineConfig, RolloutRequest, rollout
from eef.rollout.episode import summarize
from eef.trajectory import Trajectory, read_jsonl, write_jsonl


def expert_stage(cfg: ExperimentConfig, run: RunDir, env: TextEnv, train_ids: Sequence[str]
                 ) -> list[Trajectory]:
    """Expert trajectories on the training tasks: collected (resumable) or imported, from one
    expert or several (``expert.policies``, a list of ``expert.trajectories`` files).  Every
    trajectory is kept, several of one task included; each names its expert in
    ``source.expert`` and has its own ``source.id``."""
    out = "expert.jsonl"
    names = cfg.expert.sources()
    train_ids = list(train_ids)

    def collect() -> dict[str, Any]:
        trajs: list[Trajectory] = []
        for j, name in enumerate(names):
            got = (_import_experts(name, train_ids) if cfg.expert.trajectories
                   else _collect_experts(cfg, run, env, train_ids, name,
                                         out if len(names) == 1 else f"experts/{j}.jsonl"))
            for t in got:
                t.source.expert = name
                if len(names) > 1:
                    t.source.id = f"expert/{name}/{t.task_id}"
                t.source.id = t.source.id or f"expert/{t.task_id}"
            trajs += got
        seen: dict[str, int] = {}
        for t in trajs:  # several trajectories of one task from one expert: #2, #3, ...
            n = seen[t.source.id] = seen.get(t.source.id, 0) + 1
            if n > 1:
                t.source.id += f"#{n}"
        write_jsonl(run / out, trajs)
        s = summarize(trajs)
        run.log_metrics({"stage": "expert", "method": "expert", "iteration": None,
                         "split": cfg.env.train_split, **s})
        return s

    expert = {k: v for k, v in to_dict(cfg.expert).items() if k != "policies" or v}
    run.stage("expert", {"expert": expert, "tasks": train_ids, "env": to_dict(cfg.env)},
              [out], collect)
    return read_jsonl(run / out)


def _import_experts(path: str, task_ids: list[str]) -> list[Trajectory]:
    """Every trajectory of ``path`` on the tasks ``task_ids`` (in their order); each task needs
    one at least."""
    by_task: dict[str, list[Trajectory]] = {}
    for t in read_jsonl(path):
        by_task.setdefault(t.task_id, []).append(t)
    missing = [i for i in task_ids if i not in by_task]
    if missing:
        raise ValueError(f"{path}: no trajectory for {len(missing)} training task(s), "
                         f"e.g. {missing[0]}")
    return [t for i in task_ids for t in by_task[i]]


def _collect_experts(cfg: ExperimentConfig, run: RunDir, env: TextEnv, train_ids: list[str],
                     policy: str, rel: str) -> list[Trajectory]:
    """One episode of ``policy`` per training task into ``RUN_DIR/rel`` (resumable)."""
    from eef.policy import load_policy
    from eef.rollout.episode import collect as collect_eps
    (run / rel).parent.mkdir(parents=True, exist_ok=True)
    return collect_eps(env, load_policy(policy, env), train_ids, run / rel, seed=cfg.seed,
                       source={"kind": "expert"}, progress=cfg.rollout.progress)


#: the stage (and metrics row) of the expert's evaluation on the eval tasks; with several
#: experts (``expert.policies``) ``expert/eval/J`` for the J-th
EXPERT_EVAL_STAGE = "expert/eval"


def expert_eval_stage(ctx: Context) -> list[dict[str, Any]]:
    """The expert on the evaluation tasks, one episode each (resumable, cached by its inputs):
    the comparison's ``expert`` row, on the goals the methods are evaluated on.  A metrics row
    per expert (stage ``expert/eval``, method ``expert``; several experts: ``expert/eval/J``,
    method ``expert/J``).  Imported expert trajectories have no policy to run: no stage, [].
    A run directory made before this stage existed gains it; its other stages are untouched."""
    cfg, run = ctx.cfg, ctx.run
    if cfg.expert.trajectories:
        return []
    names = cfg.expert.sources()
    rows = []
    for j, name in enumerate(names):
        one = len(names) == 1
        stage = EXPERT_EVAL_STAGE if one else f"{EXPERT_EVAL_STAGE}/{j}"
        rel = "rollouts/eval/expert.jsonl" if one else f"rollouts/eval/expert/{j}.jsonl"

        def go(name: str = name, rel: str = rel) -> dict[str, Any]:
            trajs = _collect_experts(cfg, run, ctx.env, list(ctx.eval_ids), name, rel)
            return summarize(trajs)

        run.stage(stage, {"policy": name, "tasks": list(ctx.eval_ids), "env": to_dict(cfg.env),
                          "seed": cfg.seed}, [rel], go)
        row = {"stage": stage, "key": run.output_key(rel), "method": "expert" if one
               else f"expert/{j}", "policy": name, "iteration": None, "output": rel,
               "split": cfg.env.eval_split, **summarize(read_jsonl(run / rel))}
        run.log_metrics(row)
        rows.append(row)
    return rows


def base_stage(cfg: ExperimentConfig) -> Path:
    """The base model directory: a preset built once per machine (cached), or an HF path."""
    base = cfg.model.base
    if base.startswith("hf:"):
        return Path(base[3:])
    name = base.split(":", 1)[1]
    if cfg.model.pretrain:
        from eef.presets import build_preset
        return Path(build_preset(name, cfg.env.name, progress=cfg.rollout.progress,
                                 **cfg.model.preset_options))
    from eef.paths import cache_dir
    from eef.presets import init_preset
    out = cache_dir() / "presets" / f"{name}-{cfg.env.name}-init-{digest(cfg.model.preset_options)}"
    if not (out / "config.json").exists():
        init_preset(name, cfg.env.name, out, **cfg.model.preset_options)
    return out


def replay_data(cfg: ExperimentConfig) -> list[Trajectory]:
    """``model.replay`` sequences of the base preset's pre-training corpus (seeded by the
    run's seed; the same for every training stage of the run)."""
    m = cfg.model
    if not m.replay:
        return []
    from eef.presets import replay_sequences
    return replay_sequences(cfg.env.name, dict(m.preset_options), m.replay, cfg.seed)


def train_stage(ctx: Context, name: str, init: Path, data: list[Trajectory],
                lr: float | None = None) -> Path:
    """Fine-tune ``init`` on ``data`` (plus ``model.replay`` pre-training sequences) into
    ``models/NAME`` (resumable, cached by content).  No data and an ``init`` other than the
    base model (``method.train_from: continue`` after an iteration that found nothing):
    ``init`` itself, unchanged.  ``lr`` overrides ``train.lr`` (``method.iteration_lr``)."""
    from eef.models.train import train_sft
    train = ctx.cfg.train if lr is None else dataclasses.replace(ctx.cfg.train, lr=lr)
    data = list(data) + list(ctx.replay)
    run = ctx.run
    rel = f"models/{name}"
    data_rel = f"data/{name}.jsonl"

    def go() -> dict[str, Any]:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(run / data_rel, data)
        cfg = dataclasses.replace(train, seed=ctx.agent_seed, system=ctx.cfg.model.system)
        res = train_sft(str(init), run / data_rel, run / rel, cfg, progress=ctx.cfg.rollout.progress)
        return {k: res[k] for k in ("steps", "tokens", "trained_tokens", "seconds", "decisions")
                if k in res}

    key = {"init": str(init), "init_key": model_key(init),
           "data": digest([t.to_dict() for t in data]), "train": train.key(),
           "seed": ctx.agent_seed, "system": ctx.cfg.model.system}
    # the same training done under another name (e.g. an iteration that added no sample):
    # its model is used as is, so the evaluations of that model are shared too
    k = digest(key)
    if not data and init != ctx.base:  # nothing found to go on training with: init as is
        run.log_metrics({"stage": f"train/{name}", "key": k, "examples": 0, "steps": 0,
                         "same_as": "init", "init": str(init)})
        return init
    same = None if run.done(f"train/{name}", k) else run.find_done("train/", k)
    if same is not None:
        write_jsonl(run / data_rel, data)
        run.log_metrics({"stage": f"train/{name}", "key": digest(key), "examples": len(data),
                         **(same.get("result") or {}), "same_as": same["stage"]})
        return run / next(iter(same["outputs"]))
    res = run.stage(f"train/{name}", key, [rel], go)
    run.log_metrics({"stage": f"train/{name}", "key": digest(key), "examples": len(data), **res})
    return run / rel


def rollout_stage(ctx: Context, name: str, model: Path, requests: list[RolloutRequest]
                  ) -> list[Trajectory]:
    """Run requests with the model at ``model``; ``rollouts/NAME.jsonl`` (resumable)."""
    run = ctx.run
    rel = f"rollouts/{name}.jsonl"
    (run / rel).parent.mkdir(parents=True, exist_ok=True)

    def go() -> dict[str, Any]:
        pol = policies.load_model_policy(ctx, model)
        try:
            res = rollout(make_env_factory(ctx.cfg), pol, requests, run / rel,
                          dataclasses.replace(ctx.cfg.rollout, policy_version=name))
        finally:
            policies.release_policy(pol)
        return {"budget": Budget.of(res.trajectories).counts(), "failures": len(res.failures)}

    key = {"model": str(model), "model_key": model_key(model),
           "requests": [(r.task_id, r.start_state, r.samples, r.seed, r.parent_id,
                         r.sampling.record() if r.sampling else None) for r in requests]}
    key.update(grounding_key(ctx.cfg.rollout))
    fresh = [i for i, r in enumerate(requests) if r.fresh_step_limit]
    if fresh:  # method.sim_steps: full
        key["fresh_step_limit"] = fresh
    if ctx.cfg.model.max_context is not None and not ctx.cfg.model.serve_url:
        key["max_context"] = ctx.cfg.model.max_context
    run.stage(f"rollout/{name}", key, [rel], go, share="rollout/")  # same requests, same model
    return read_jsonl(run / rel)


def grounding_key(ro: EngineConfig) -> dict[str, Any]:
    """The grounding settings a rollout stage's key holds: each only once it differs from
    the setting before it existed, so that the keys of earlier runs stay valid."""
    key: dict[str, Any] = {}
    if ro.ground_actions:
        key["ground_actions"] = True
        if ro.ground_by != "fuzzy" or ro.avoid_repeats:
            key["ground_by"], key["avoid_repeats"] = ro.ground_by, ro.avoid_repeats
        if ro.fill_without_thought:
            key["fill_without_thought"] = True
    return key


def make_env_factory(cfg: ExperimentConfig):
    from eef.rollout.pool import EnvSpec
    return EnvSpec(cfg.env.name, dict(cfg.env.options))


def train_sampling(cfg: ExperimentConfig) -> Sampling:
    c = cfg.sampling
    return Sampling(c.temperature, c.top_p, c.max_new_tokens, c.no_repeat_ngram)


def eval_stage(ctx: Context, method: str, iteration: int | None, name: str, model: Path
               ) -> dict[str, Any]:
    """Evaluate ``model`` on the eval tasks (``eval_temperature``, one episode each)."""
    c = ctx.cfg.sampling
    s = Sampling(c.eval_temperature, 1.0, c.max_new_tokens, c.no_repeat_ngram)
    reqs = [RolloutRequest(t, sampling=s, seed=ctx.agent_seed) for t in ctx.eval_ids]
    trajs = rollout_stage(ctx, f"eval/{name}", model, reqs)
    summ = summarize(trajs)
    row = {"stage": f"eval/{name}", "key": ctx.run.output_key(f"rollouts/eval/{name}.jsonl"),
           "method": method, "iteration": iteration, "split": ctx.cfg.env.eval_split, **summ}
    ctx.run.log_metrics(row)
    return row
