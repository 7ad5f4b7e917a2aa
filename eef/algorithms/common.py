"""Stages shared by every method: expert trajectories, base model, training, rollouts,
evaluation and the positive repository."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eef.algorithms.config import KEEP_RULES, ExperimentConfig, to_dict
from eef.algorithms.rundir import RunDir, digest
from eef.envs.base import TextEnv, round_robin_by_type
from eef.policy import Sampling
from eef.rollout.budget import Budget
from eef.rollout.engine import RolloutRequest, rollout
from eef.rollout.episode import summarize
from eef.trajectory import Trajectory, read_jsonl, write_jsonl


@dataclass
class Context:
    cfg: ExperimentConfig
    run: RunDir
    env: TextEnv
    train_ids: list[str] = field(default_factory=list)
    explore_ids: list[str] = field(default_factory=list)  # RFT / EEF rollouts (method.explore_tasks)
    eval_ids: list[str] = field(default_factory=list)
    experts: list[Trajectory] = field(default_factory=list)
    base: Path | None = None
    replay: list[Trajectory] | None = None  # model.replay sequences, made once per run

    @property
    def agent_seed(self) -> int:
        """Seed of fine-tuning and of the agent's sampling (``train_seed``, else ``seed``)."""
        c = self.cfg
        return c.seed if c.train_seed is None else c.train_seed

    @property
    def expert_successes(self) -> list[Trajectory]:
        return [t for t in self.experts if t.success]

    @property
    def explored_experts(self) -> list[Trajectory]:
        """The expert's trajectories on the tasks RFT / EEF explore."""
        ids = set(self.explore_ids)
        return [t for t in self.experts if t.task_id in ids]


def make_env(cfg: ExperimentConfig) -> TextEnv:
    import eef.envs as envs
    return envs.make(cfg.env.name, **cfg.env.options)


def select_tasks(env: TextEnv, cfg: ExperimentConfig) -> tuple[list[str], list[str], list[str]]:
    """(train ids, dev ids, eval ids): a seeded subset of the train split (the dev slice is
    held out of it), and the first ``eval_tasks`` of the eval split (in ``eval_order``)."""
    train = [t.id for t in env.tasks(cfg.env.train_split)]
    random.Random(cfg.seed).shuffle(train)
    dev = train[: cfg.env.dev_tasks]
    train = train[cfg.env.dev_tasks:]
    if cfg.env.train_tasks is not None:
        train = train[: cfg.env.train_tasks]
    ev = [t.id for t in env.tasks(cfg.env.eval_split)]
    if cfg.env.eval_order == "by_type":
        ev = round_robin_by_type(ev)
    if cfg.env.eval_tasks is not None:
        ev = ev[: cfg.env.eval_tasks]
    return sorted(train), sorted(dev), ev


def explore_subset(train_ids: list[str], n: int | None, seed: int) -> list[str]:
    """The training tasks RFT / EEF roll out on: all, or a seeded subset of ``n`` (sorted)."""
    if n is None or n >= len(train_ids):
        return list(train_ids)
    return sorted(random.Random(seed * 104729 + 1).sample(list(train_ids), n))


def expert_stage(ctx: Context) -> list[Trajectory]:
    """Expert trajectories on the training tasks: collected (resumable) or imported, from one
    expert or several (``expert.policies``, a list of ``expert.trajectories`` files).  Every
    trajectory is kept, several of one task included; each names its expert in
    ``source.expert`` and has its own ``source.id``."""
    cfg, run = ctx.cfg, ctx.run
    out = "expert.jsonl"
    names = cfg.expert.sources()

    def collect() -> dict[str, Any]:
        trajs: list[Trajectory] = []
        for j, name in enumerate(names):
            got = (_import_experts(name, ctx.train_ids) if cfg.expert.trajectories
                   else _collect_experts(ctx, name, out if len(names) == 1 else f"experts/{j}.jsonl"))
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
    run.stage("expert", {"expert": expert, "tasks": ctx.train_ids, "env": to_dict(cfg.env)},
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


def _collect_experts(ctx: Context, policy: str, rel: str) -> list[Trajectory]:
    """One episode of ``policy`` per training task into ``RUN_DIR/rel`` (resumable)."""
    from eef.policy import load_policy
    from eef.rollout.episode import collect as collect_eps
    (ctx.run / rel).parent.mkdir(parents=True, exist_ok=True)
    return collect_eps(ctx.env, load_policy(policy, ctx.env), ctx.train_ids, ctx.run / rel,
                       seed=ctx.cfg.seed, source={"kind": "expert"},
                       progress=ctx.cfg.rollout.progress)


def base_stage(ctx: Context) -> Path:
    """The base model directory: a preset built once per machine (cached), or an HF path."""
    base = ctx.cfg.model.base
    if base.startswith("hf:"):
        return Path(base[3:])
    name = base.split(":", 1)[1]
    if ctx.cfg.model.pretrain:
        from eef.presets import build_preset
        return Path(build_preset(name, ctx.cfg.env.name, progress=ctx.cfg.rollout.progress,
                                 **ctx.cfg.model.preset_options))
    from eef.paths import cache_dir
    from eef.presets import init_preset
    out = cache_dir() / "presets" / f"{name}-{ctx.cfg.env.name}-init-{digest(ctx.cfg.model.preset_options)}"
    if not (out / "config.json").exists():
        init_preset(name, ctx.cfg.env.name, out, **ctx.cfg.model.preset_options)
    return out


def replay_data(ctx: Context) -> list[Trajectory]:
    """``model.replay`` sequences of the base preset's pre-training corpus (seeded by the
    run's seed; the same for every training stage of the run)."""
    m = ctx.cfg.model
    if not m.replay:
        return []
    if ctx.replay is None:
        from eef.presets import replay_sequences
        ctx.replay = replay_sequences(ctx.cfg.env.name, dict(m.preset_options), m.replay,
                                      ctx.cfg.seed)
    return ctx.replay


def train_stage(ctx: Context, name: str, init: Path, data: list[Trajectory]) -> Path:
    """Fine-tune ``init`` on ``data`` (plus ``model.replay`` pre-training sequences) into
    ``models/NAME`` (resumable, cached by content)."""
    from eef.models.train import train_sft
    data = list(data) + replay_data(ctx)
    run = ctx.run
    rel = f"models/{name}"
    data_rel = f"data/{name}.jsonl"

    def go() -> dict[str, Any]:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(run / data_rel, data)
        cfg = dataclasses.replace(ctx.cfg.train, seed=ctx.agent_seed, system=ctx.cfg.model.system)
        res = train_sft(str(init), run / data_rel, run / rel, cfg, progress=ctx.cfg.rollout.progress)
        return {k: res[k] for k in ("steps", "tokens", "trained_tokens", "seconds") if k in res}

    key = {"init": str(init), "init_key": _dir_key(init), "data": digest([t.to_dict() for t in data]),
           "train": ctx.cfg.train.key(), "seed": ctx.agent_seed, "system": ctx.cfg.model.system}
    # the same training done under another name (e.g. an iteration that added no sample):
    # its model is used as is, so the evaluations of that model are shared too
    k = digest(key)
    same = None if run.done(f"train/{name}", k) else run.find_done("train/", k)
    if same is not None:
        write_jsonl(run / data_rel, data)
        run.log_metrics({"stage": f"train/{name}", "key": digest(key), "examples": len(data),
                         **(same.get("result") or {}), "same_as": same["stage"]})
        return run / next(iter(same["outputs"]))
    res = run.stage(f"train/{name}", key, [rel], go)
    run.log_metrics({"stage": f"train/{name}", "key": digest(key), "examples": len(data), **res})
    return run / rel


def _dir_key(p: Path) -> str:
    """What identifies a trained model directory: its weights file's size and time (a LoRA
    run's adapter file when there is one, so a retrained adapter is never taken for the old)."""
    for name in ("adapter_model.safetensors", "model.safetensors"):
        f = p / name
        if f.exists():
            st = f.stat()
            return f"{name}-{st.st_size}-{int(st.st_mtime)}"
    return str(p)


def policy_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model_policy(ctx: Context, model: Path):
    """The policy of the model at ``model``: loaded in-process, or (``model.serve_url``) the
    served base model / the LoRA adapter registered with the server.  ``release`` it."""
    m, r = ctx.cfg.model, ctx.cfg.rollout
    if m.serve_url:
        from functools import partial

        from eef.models.served import release, served_policy
        kw = dict(base_dir=base_stage(ctx), base_name=m.serve_model,
                  api_key_env=m.serve_api_key_env, system=m.system,
                  concurrency=max(1, r.num_envs))
        if not m.serve_urls:
            return served_policy(m.serve_url, model, **kw)
        from eef.rollout.replicas import ReplicatedPolicy
        return ReplicatedPolicy([partial(served_policy, u, model, **kw)
                                 for u in [m.serve_url, *m.serve_urls]],
                                "ray" if r.backend == "ray" else "local",
                                ray_address=r.ray_address, release_fn=release)
    from eef.policy import load_policy
    return load_policy(f"hf:{model}", ctx.env, system=m.system, device=policy_device(m.device),
                       trim_block=m.trim_block, prefix_cache_mb=m.prefix_cache_mb,
                       max_context=m.max_context, dtype=m.dtype)


def release_policy(policy: Any) -> None:
    """Free a policy of ``load_model_policy`` (unloads a served adapter)."""
    from eef.models.served import release
    release(policy)


def rollout_stage(ctx: Context, name: str, model: Path, requests: list[RolloutRequest]
                  ) -> list[Trajectory]:
    """Run requests with the model at ``model``; ``rollouts/NAME.jsonl`` (resumable)."""
    run = ctx.run
    rel = f"rollouts/{name}.jsonl"
    (run / rel).parent.mkdir(parents=True, exist_ok=True)

    def go() -> dict[str, Any]:
        pol = load_model_policy(ctx, model)
        try:
            res = rollout(make_env_factory(ctx.cfg), pol, requests, run / rel,
                          _engine_cfg(ctx, name))
        finally:
            release_policy(pol)
        return {"budget": Budget.of(res.trajectories).counts(), "failures": len(res.failures)}

    key = {"model": str(model), "model_key": _dir_key(model),
           "requests": [(r.task_id, r.start_state, r.samples, r.seed, r.parent_id,
                         _sampling_key(r.sampling)) for r in requests]}
    ro = ctx.cfg.rollout
    if ro.ground_actions:  # other episodes: keys of earlier runs stay valid
        key["ground_actions"] = True
        if ro.ground_by != "fuzzy" or ro.avoid_repeats:
            key["ground_by"], key["avoid_repeats"] = ro.ground_by, ro.avoid_repeats
    fresh = [i for i, r in enumerate(requests) if r.fresh_step_limit]
    if fresh:  # method.sim_steps: full
        key["fresh_step_limit"] = fresh
    if ctx.cfg.model.max_context is not None and not ctx.cfg.model.serve_url:
        key["max_context"] = ctx.cfg.model.max_context
    run.stage(f"rollout/{name}", key, [rel], go, share="rollout/")  # same requests, same model
    return read_jsonl(run / rel)


def make_env_factory(cfg: ExperimentConfig):
    from eef.rollout.pool import EnvSpec
    return EnvSpec(cfg.env.name, dict(cfg.env.options))


def _engine_cfg(ctx: Context, name: str):
    return dataclasses.replace(ctx.cfg.rollout, policy_version=name)


def _sampling_key(s: Sampling | None) -> dict[str, Any] | None:
    """A request's sampling in a stage key: fields at their off value are left out, so keys
    of runs recorded before a field existed stay valid."""
    if s is None:
        return None
    d = dataclasses.asdict(s)
    if not d.get("no_repeat_ngram"):
        d.pop("no_repeat_ngram", None)
    return d


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


class PositiveRepository:
    """The agent's successful trajectories by key (a task's s_0, an EEF important state), kept
    by ``keep`` (``method.rft_keep``): ``shortest`` one per key (highest reward, then fewest
    steps); ``distinct`` every success whose action sequence differs from those kept under its
    key; ``all`` every success (repeats included)."""

    def __init__(self, keep: str = "distinct") -> None:
        if keep not in KEEP_RULES:
            raise ValueError(f"keep rule {keep!r} is not one of {', '.join(KEEP_RULES)}")
        self.keep = keep
        self.items: dict[Any, list[Trajectory]] = {}

    def offer(self, key: Any, t: Trajectory) -> bool:
        """Add ``t`` under ``key`` if it succeeded and the keep rule takes it."""
        if not t.success:
            return False
        kept = self.items.setdefault(key, [])
        if self.keep == "shortest":
            if kept and (-t.reward, len(t)) >= (-kept[0].reward, len(kept[0])):
                return False
            kept[:] = [t]
            return True
        if self.keep == "distinct" and any(k.actions == t.actions for k in kept):
            return False
        kept.append(t)
        return True

    def __len__(self) -> int:
        return sum(map(len, self.items.values()))

    def trajectories(self) -> list[Trajectory]:
        return [t for k in sorted(self.items, key=str) for t in self.items[k]]
