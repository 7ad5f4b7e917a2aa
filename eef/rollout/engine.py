"""The batched rollout engine: many episodes at once against one policy.

Each round, the turns of every live episode go to the policy in one batched ``act`` call, the
env slots step concurrently, and a slot whose episode ended starts the next pending episode at
once (continuous batching) until every requested episode is done.

An episode starts from a task's start state or from state k of a recorded (expert) trajectory:
its first k actions are replayed and kept in the context, then the policy takes over (how EEF
simulates the agent from expert states: ``eef.algorithms.labels.simulation_requests``).  Envs
that snapshot replay a recorded trajectory once (one pass snapshots every state requested from
it; once per worker for the process and Ray backends) and restore the snapshots for the other
samples; the others replay per episode.  Replay divergence
from the record is kept in ``meta.replay_match`` / ``meta.replay_divergence``.  The env's step
limit counts the replayed steps too, unless the request asks for ``fresh_step_limit`` (then
the policy may take the env's whole limit after state k: EEF's ``method.sim_steps: full``).

For the same seeds and a deterministic policy the engine produces exactly the trajectories of
the sequential loop ``eef.rollout.episode.run_episode`` (the per-step seed is
``episode_seed + len(steps)`` in both).

Output.  Each finished trajectory is appended to the JSONL file as it ends (a rerun with the
same file resumes: finished episodes are not run again).  Episodes that still fail after
``max_retries`` restarts of a dead env go to ``<out>.failed.jsonl`` with the error (never
dropped).  ``source`` holds the provenance (kind, policy, policy_version, start_state, parent,
sample, seed, sampling) and ``meta`` the budget (env_steps incl. replay, generated_tokens,
wall_s, retries).

Generated tokens.  After ``act``, a policy may set ``last_generated_tokens``: a list of ints, one
per context of that call (tokens generated for that response).  Without it the count is
``None`` (unknown), e.g. for scripted experts.

Prompt tokens.  ``meta.prompt_tokens`` counts the prompt tokens of every turn (before prefix
reuse) and ``meta.prefill_tokens`` those the model computed (after it: the prefill work).  Per
context when the policy sets ``last_prompt_tokens`` and ``last_reused_tokens`` (lists like
``last_generated_tokens``); else from its ``stats`` counters (``prompt_tokens``,
``reused_tokens``, as ``eef.models.decode.DecodeStats``): each call's increase, split evenly over
its contexts (so sums over episodes are exact); else ``None``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from eef.envs.base import EnvDiedError, StepResult, TextEnv, UnknownTaskError
from eef.policy import Policy, Sampling
from eef.rollout.budget import Budget, add_count
from eef.rollout.grounding import Grounding, ground_batch, note_grounding
from eef.react import parse_turn
from eef.rollout.pool import EnvPool, EnvSpec, LocalPool, ProcessPool, StartResult
from eef.trajectory import (Provenance, Step, Trajectory, TrajectoryFormatError, dumps_line,
                            iter_jsonl)

#: sample i of a request with seed s runs with episode seed s + SAMPLE_SEED_STRIDE * i (the
#: per-step seeds seed + len(steps) of different samples never overlap)
SAMPLE_SEED_STRIDE = 1_000_003


class RolloutRequestError(ValueError):
    """A rollout request is malformed (the message says which one and why)."""


@dataclass
class RolloutRequest:
    """``samples`` episodes of one task, from its start or from state ``start_state`` of a
    recorded trajectory."""

    task_id: str = field(metadata={"help": "Task to play."})
    parent: Trajectory | None = field(default=None, metadata={
        "help": "Recorded trajectory to start from (its first start_state actions are replayed)."})
    start_state: int = field(default=0, metadata={
        "help": "Number of recorded actions replayed before the policy takes over (0: start)."})
    samples: int = field(default=1, metadata={"help": "Episodes to run from this state (M)."})
    sampling: Sampling | None = field(default=None, metadata={"help": "Decoding parameters."})
    seed: int = field(default=0, metadata={
        "help": "Base seed; sample i uses seed + SAMPLE_SEED_STRIDE * i."})
    parent_id: str | None = field(default=None, metadata={
        "help": "Id of the parent recorded in source.parent (default: trajectory_id(parent))."})
    source: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Extra provenance merged into each trajectory's source."})
    fresh_step_limit: bool = field(default=False, metadata={
        "help": "The env's step limit counts from start_state (the policy may take the whole "
                "limit after the replayed prefix) instead of from the task's start; needs an "
                "env that restarts_step_limit."})


@dataclass
class EngineConfig:
    """How the engine runs (``rollout.*`` in configs)."""

    num_envs: int = field(default=8, metadata={
        "help": "Env slots = episodes in flight = largest act batch."})
    backend: Literal["local", "process", "ray"] = field(default="local", metadata={
        "help": "local: envs in this process; process: one worker process per env "
                "(ScienceWorld); ray: one Ray actor per env."})
    threads: int = field(default=0, metadata={
        "help": "local backend: step the envs in this many threads (0: one after the other, "
                "best for pure-Python envs)."})
    max_retries: int = field(default=2, metadata={
        "help": "Restarts of an episode whose env died before it is recorded as failed."})
    max_episode_steps: int | None = field(default=None, metadata={
        "help": "Safety cap on policy steps per episode (None: the env's own limit)."})
    ground_actions: bool = field(default=False, metadata={
        "help": "Replace an action the state does not admit by the closest admissible one "
                "(eef.rollout.grounding; the model's text is kept in meta['grounded'])."})
    ground_by: Literal["fuzzy", "likelihood"] = field(default="fuzzy", metadata={
        "help": "With ground_actions: the closest admissible action by string similarity "
                "('fuzzy') or the one the model finds most likely after its own thought "
                "('likelihood': constrained decoding; policies that cannot rank use fuzzy)."})
    avoid_repeats: bool = field(default=False, metadata={
        "help": "With ground_actions: an action the episode already took from the same "
                "observation is inadmissible there (breaks click / go-back loops; assumes the "
                "observation is the state, as in WebShop)."})
    fill_without_thought: bool = field(default=False, metadata={
        "help": "With ground_by likelihood: a state that lists only templates (WebShop's "
                "search page) and an action that fills none has the turn continued from "
                "'Action: <verb>[' without the model's thought (which argued for an action "
                "the state does not admit) instead of after it."})
    use_snapshots: bool = field(default=True, metadata={
        "help": "Replay once per env slot and restore snapshots, when the env supports them."})
    snapshot_cache: int = field(default=64, metadata={
        "help": "Snapshots kept (LRU): per process for the local backend, per worker else."})
    share_snapshots: bool = field(default=True, metadata={
        "help": "local backend: the env slots share one snapshot store (a replay is then done "
                "once per recorded trajectory, not once per slot)."})
    call_timeout_s: float = field(default=300.0, metadata={
        "help": "process backend: an env call slower than this kills its worker (EnvDiedError)."})
    ray_address: str | None = field(default=None, metadata={
        "help": "ray backend: cluster address ('auto', 'ray://host:10001'); None starts a "
                "local Ray unless one is running."})
    ray_num_cpus: float = field(default=1.0, metadata={
        "help": "ray backend: CPUs reserved per env actor."})
    policy_version: str | None = field(default=None, metadata={
        "help": "Recorded as source.policy_version (e.g. a checkpoint step)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def grounding(self) -> Grounding:
        """The grounding rules of ``ground_by`` and its companions (used with
        ``ground_actions``)."""
        return Grounding(self.ground_by, self.avoid_repeats, self.fill_without_thought)


@dataclass
class RolloutResult:
    """Trajectories in request order (sample order within a request); failures; budgets."""

    trajectories: list[Trajectory]
    failures: list[Trajectory]
    budgets: list[Budget]
    stats: dict[str, Any]


def trajectory_id(t: Trajectory) -> str:
    """A stable id of a recorded trajectory: ``source.id`` if set, else task id + a hash of its
    actions and policy."""
    if t.source.id:
        return str(t.source.id)
    h = hashlib.sha1(json.dumps([t.source.policy, t.actions]).encode()).hexdigest()[:12]
    return f"{t.task_id}#{h}"


def make_pool(env: EnvSpec | Callable[[], TextEnv] | str, config: EngineConfig) -> EnvPool:
    """The env pool of ``config.backend``."""
    factory = EnvSpec(env) if isinstance(env, str) else env
    if config.backend == "local":
        return LocalPool(factory, config.num_envs, config.threads, config.snapshot_cache,
                         config.share_snapshots)
    if config.backend == "process":
        return ProcessPool(factory, config.num_envs, config.call_timeout_s,
                           snapshot_cache=config.snapshot_cache)
    if config.backend == "ray":
        from eef.rollout.ray_backend import RayPool
        return RayPool(factory, config.num_envs, address=config.ray_address,
                       num_cpus=config.ray_num_cpus, snapshot_cache=config.snapshot_cache)
    raise ValueError(f"unknown rollout backend {config.backend!r} (local, process, ray)")


@dataclass
class _Episode:
    order: int
    req: int
    sample: int
    seed: int
    key: tuple
    traj: Trajectory | None = None
    slot: int | None = None
    start_k: int = 0
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    env_steps: int = 0
    replay_steps: int = 0
    tokens: int | None = 0
    prompt_tokens: int | None = 0
    prefill_tokens: int | None = 0
    t0: float = 0.0
    last: StepResult | None = None
    raw_action: str = ""  # the model's action of the current step, before grounding


def _episode_key(task_id: str, parent: str | None, k: int, sample: int, seed: int) -> tuple:
    return (task_id, parent or "", int(k), int(sample), int(seed))


def _key_of(t: Trajectory) -> tuple:
    s = t.source
    return _episode_key(t.task_id, s.parent, s.start_state or 0, s.sample or 0, s.seed or 0)


def failed_path(out: str | os.PathLike) -> Path:
    """Where the failed episodes of ``out`` go: ``x.jsonl`` -> ``x.failed.jsonl``."""
    p = Path(out)
    return p.with_name(p.name[: -len(".jsonl")] + ".failed.jsonl" if p.name.endswith(".jsonl")
                       else p.name + ".failed.jsonl")


class RolloutEngine:
    """Runs rollout requests with one policy over a pool of envs.

    ``env`` is an env name (``eef.envs.make``), an ``EnvSpec`` or a zero-argument factory (it
    must pickle for the process and Ray backends).  ``pool`` overrides the pool built from
    ``config`` (the engine then does not close it).
    """

    def __init__(self, env: EnvSpec | Callable[[], TextEnv] | str, policy: Policy,
                 config: EngineConfig | None = None, pool: EnvPool | None = None):
        self.config = config or EngineConfig()
        self.policy = policy
        self._own_pool = pool is None
        self.pool = pool if pool is not None else make_pool(env, self.config)
        info = self.pool.info()
        self.env_name: str = info["name"]
        self.snapshots = bool(info["supports_snapshot"]) and self.config.use_snapshots
        self.restarts_step_limit = bool(info.get("restarts_step_limit"))
        self._known: set[str] = set()  # task ids already checked
        self._slot_states: dict[int, set[tuple[str, int]]] = {}  # snapshots each slot holds
        self._wanted: dict[str, set[int]] = {}

    def close(self) -> None:
        if self._own_pool:
            self.pool.close()

    def __enter__(self) -> "RolloutEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------
    def _validate(self, requests: Sequence[RolloutRequest]) -> None:
        todo = sorted({r.task_id for r in requests} - self._known)
        if todo:
            bad = self.pool.run([(0, "unknown_tasks", (todo,))])[0]
            if isinstance(bad, BaseException):
                raise bad
            if bad:
                raise UnknownTaskError(
                    f"unknown {self.env_name} task ids: {', '.join(bad[:10])}"
                    + (f" (+{len(bad) - 10} more)" if len(bad) > 10 else ""))
            self._known.update(todo)
        if self.config.max_episode_steps is not None and self.config.max_episode_steps < 1:
            raise RolloutRequestError("max_episode_steps must be >= 1 or None")
        for i, r in enumerate(requests):
            where = f"request {i} ({r.task_id})"
            if r.samples < 1:
                raise RolloutRequestError(f"{where}: samples must be >= 1, got {r.samples}")
            if r.start_state < 0:
                raise RolloutRequestError(f"{where}: start_state must be >= 0")
            if r.start_state > 0 and r.parent is None:
                raise RolloutRequestError(f"{where}: start_state {r.start_state} needs a parent")
            if r.fresh_step_limit and r.start_state > 0 and not self.restarts_step_limit:
                raise RolloutRequestError(
                    f"{where}: fresh_step_limit, but {self.env_name} cannot count its step limit "
                    "from a later state (restart_step_limit)")
            if r.parent is not None:
                if r.parent.task_id != r.task_id:
                    raise RolloutRequestError(
                        f"{where}: parent trajectory is of task {r.parent.task_id!r}")
                if r.start_state > len(r.parent):
                    raise RolloutRequestError(f"{where}: start_state {r.start_state} > the "
                                              f"parent's {len(r.parent)} steps")

    # -- the loop ------------------------------------------------------------------------
    def run(self, requests: Sequence[RolloutRequest], out: str | os.PathLike | None = None
            ) -> RolloutResult:
        """Run every sample of every request; append finished trajectories to ``out``."""
        requests = list(requests)
        self._validate(requests)
        cfg = self.config
        parent_ids = [(r.parent_id or trajectory_id(r.parent)) if r.parent is not None else None
                      for r in requests]
        # states wanted per parent (so one replay pass snapshots all of them)
        wanted: dict[str, set[int]] = {}
        self._wanted = wanted
        for r, pid in zip(requests, parent_ids):
            if pid is not None and r.start_state > 0:
                wanted.setdefault(pid, set()).add(r.start_state)

        episodes: list[_Episode] = []
        for ri, r in enumerate(requests):
            for i in range(r.samples):
                seed = r.seed + SAMPLE_SEED_STRIDE * i
                k = r.start_state if r.parent is not None else 0
                pid = parent_ids[ri] if k > 0 else None  # state 0 is the task's start
                episodes.append(_Episode(len(episodes), ri, i, seed,
                                         _episode_key(r.task_id, pid, k, i, seed), start_k=k))
        by_key = {e.key: e for e in episodes}
        if len(by_key) < len(episodes):
            seen: set[tuple] = set()
            dup = next(e.key for e in episodes if e.key in seen or seen.add(e.key))
            raise RolloutRequestError(
                f"two requests ask for the same episode (task, parent, state, sample, seed) = "
                f"{dup}: give them different seeds or merge their samples")
        finished: dict[int, Trajectory] = {}
        failures: list[Trajectory] = []
        budgets = [Budget() for _ in requests]
        req_t0 = [0.0] * len(requests)  # when each request's first episode started

        # resume
        if out is not None and Path(out).exists():
            from eef.rollout.episode import _truncate_partial_line
            try:
                for t in iter_jsonl(out):
                    e = by_key.get(_key_of(t))
                    if e is not None and t.done:
                        finished[e.order] = t
            except TrajectoryFormatError as err:
                raise TrajectoryFormatError(f"cannot resume from {out}: {err}") from err
            _truncate_partial_line(Path(out))
        pending = deque(e for e in episodes if e.order not in finished)
        resumed = len(finished)

        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
        fout = open(out, "a", encoding="utf-8") if out is not None else None
        ffail = None
        live: dict[int, _Episode] = {}
        free = list(range(self.pool.size))[::-1]
        t_run = time.time()
        n_steps = 0
        wins = sum(t.success for t in finished.values())
        stats = {"replay": {"exact": 0, "unordered": 0, "different": 0, "unchecked": 0},
                 "retries": 0, "snapshot_restores": 0, "act_calls": 0, "act_batch_max": 0}

        bar, job = _progress(cfg.progress, f"{self.policy.spec} on {self.env_name}",
                             len(episodes), resumed)

        def finish(e: _Episode) -> None:
            nonlocal wins
            t = e.traj
            assert t is not None
            info = e.last.info if e.last is not None else {}
            t.done = True
            t.reward = float(info.get("score", e.last.reward if e.last else 0.0))
            t.success = bool(info.get("success", False))
            t.meta.update(env_steps=e.env_steps, replay_steps=e.replay_steps,
                          generated_tokens=e.tokens, prompt_tokens=e.prompt_tokens,
                          prefill_tokens=e.prefill_tokens, wall_s=round(time.time() - e.t0, 4),
                          retries=e.attempts)
            if e.errors:
                t.meta["errors"] = list(e.errors)
            finished[e.order] = t
            wins += t.success
            if fout is not None:
                fout.write(dumps_line(t.to_dict()))
                fout.flush()
            release(e)

        def fail(e: _Episode, err: BaseException) -> None:
            nonlocal ffail
            r = requests[e.req]
            t = e.traj or Trajectory(r.task_id, self.env_name, "", "")
            t.done = False
            if e.traj is None:
                t.source = self._source(r, e, parent_ids[e.req])
            t.meta.update(error=f"{type(err).__name__}: {err}", errors=list(e.errors),
                          retries=e.attempts, env_steps=e.env_steps, wall_s=round(
                              time.time() - e.t0, 4))
            failures.append(t)
            if out is not None:
                if ffail is None:
                    ffail = open(failed_path(out), "a", encoding="utf-8")
                ffail.write(dumps_line(t.to_dict()))
                ffail.flush()
            release(e)

        def release(e: _Episode) -> None:
            b = budgets[e.req]
            b.episodes += 1
            b.env_steps += e.env_steps
            b.replay_steps += e.replay_steps
            b.generated_tokens = add_count(b.generated_tokens, e.tokens)
            b.prompt_tokens = add_count(b.prompt_tokens, e.prompt_tokens)
            b.prefill_tokens = add_count(b.prefill_tokens, e.prefill_tokens)
            b.wall_s = time.time() - req_t0[e.req]
            if e.slot is not None:
                live.pop(e.slot, None)
                free.append(e.slot)
                e.slot = None
            n_done = len(finished) + len(failures)
            if bar is not None:
                el = time.time() - t_run
                bar.update(job, completed=n_done, win=wins / max(1, len(finished)),
                           sps=n_steps / el if el > 0 else 0.0)

        def env_error(e: _Episode, err: BaseException) -> None:
            """A call of episode ``e`` failed: retry on a fresh env, or record the failure."""
            e.errors.append(f"{type(err).__name__}: {err}")
            if isinstance(err, EnvDiedError):
                slot = e.slot
                self._slot_states.pop(slot, None)
                try:
                    self.pool.restart(slot)
                except Exception as again:  # the replacement itself failed to start
                    e.errors.append(f"restart failed: {type(again).__name__}: {again}")
                if e.attempts < cfg.max_retries:
                    e.attempts += 1
                    stats["retries"] += 1
                    live.pop(slot, None)
                    free.append(slot)
                    e.slot, e.traj, e.last = None, None, None
                    pending.appendleft(e)
                    return
            fail(e, err)

        try:
            while pending or live:
                # 1. start pending episodes on free slots
                starts: list[tuple[_Episode, tuple]] = []
                while free and pending:
                    slot = free.pop()
                    e = self._pick(pending, slot)
                    e.slot = slot
                    if e.t0 == 0.0:
                        e.t0 = time.time()
                    if req_t0[e.req] == 0.0:
                        req_t0[e.req] = e.t0
                    live[slot] = e
                    starts.append((e, self._start_call(requests[e.req], e, parent_ids[e.req],
                                                       wanted)))
                if starts:
                    outs = self.pool.run([(e.slot, "start", args) for e, args in starts])
                    for (e, _), res in zip(starts, outs):
                        if isinstance(res, BaseException):
                            env_error(e, res)
                            continue
                        self._begin(requests[e.req], e, res, parent_ids[e.req], stats)
                        if res.done:
                            finish(e)
                if not live:
                    continue
                # 2. one batched act per distinct sampling setting
                acting = sorted(live.values(), key=lambda x: x.order)
                groups: dict[Any, list[_Episode]] = {}
                for e in acting:
                    groups.setdefault(requests[e.req].sampling, []).append(e)
                actions: list[tuple[_Episode, str, str]] = []
                for sampling, eps in groups.items():
                    before = _prompt_counters(self.policy)
                    responses = self.policy.act([e.traj for e in eps], sampling,
                                                [e.seed + len(e.traj.steps) for e in eps])
                    if len(responses) != len(eps):
                        raise RuntimeError(f"{self.policy.spec}: act returned {len(responses)} "
                                           f"responses for {len(eps)} contexts")
                    counts = _per_context(self.policy, "last_generated_tokens", len(eps))
                    prompt, prefill = _prompt_counts(self.policy, before, len(eps))
                    for j, (e, resp) in enumerate(zip(eps, responses)):
                        e.tokens = add_count(e.tokens, counts and counts[j])
                        e.prompt_tokens = add_count(e.prompt_tokens, prompt and prompt[j])
                        e.prefill_tokens = add_count(e.prefill_tokens, prefill and prefill[j])
                        thought, action = parse_turn(resp)
                        actions.append((e, thought, action))
                    stats["act_calls"] += 1
                    stats["act_batch_max"] = max(stats["act_batch_max"], len(eps))
                # 3. step every env
                method = "step_grounded" if cfg.ground_actions else "step"
                if cfg.ground_actions and cfg.grounding().needs_policy:
                    actions = self._ground(actions, requests)
                    method = "step"
                outs = self.pool.run([(e.slot, method, (a,)) for e, _, a in actions])
                for (e, thought, action), res in zip(actions, outs):
                    if isinstance(res, BaseException):
                        env_error(e, res)
                        continue
                    if method == "step_grounded":
                        executed, res = res
                        action = note_grounding(e.traj, action, executed)
                    elif cfg.ground_actions:  # grounded before the step (self._ground)
                        action = note_grounding(e.traj, e.raw_action, action)
                    n_steps += 1
                    e.env_steps += 1
                    e.last = res
                    e.traj.steps.append(Step(action, res.observation, thought, float(res.reward),
                                             train=True, valid=bool(res.info.get("valid", True))))
                    if res.done:
                        finish(e)
                    elif (cfg.max_episode_steps is not None
                          and len(e.traj.steps) - e.start_k >= cfg.max_episode_steps):
                        e.traj.meta["truncated"] = True
                        finish(e)
                if bar is not None:
                    el = time.time() - t_run
                    bar.update(job, sps=n_steps / el if el > 0 else 0.0)
        finally:
            if fout is not None:
                fout.close()
            if ffail is not None:
                ffail.close()
            if bar is not None:
                bar.stop()

        wall = time.time() - t_run
        trajs = [finished[e.order] for e in episodes if e.order in finished]
        ran = len(trajs) - resumed
        stats.update(episodes=len(trajs), resumed=resumed, failed=len(failures),
                     success_rate=sum(t.success for t in trajs) / len(trajs) if trajs else 0.0,
                     env_steps=n_steps, wall_s=wall,
                     episodes_per_s=ran / wall if wall > 0 else 0.0,
                     steps_per_s=n_steps / wall if wall > 0 else 0.0)
        return RolloutResult(trajs, failures, budgets, stats)

    # -- helpers -------------------------------------------------------------------------
    def _ground(self, actions: list[tuple["_Episode", str, str]], requests: list
                ) -> list[tuple["_Episode", str, str]]:
        """The policy's grounding of one step's actions (``EngineConfig.grounding``; batched per
        sampling setting: the ranking prompt budget follows it)."""
        cfg = self.config
        avail = self.pool.run([(e.slot, "available_actions", ()) for e, _, _ in actions])
        out = list(actions)
        groups: dict[Any, list[int]] = {}
        for i, (e, _, _) in enumerate(actions):
            e.raw_action = actions[i][2]
            if not isinstance(avail[i], BaseException):
                groups.setdefault(requests[e.req].sampling, []).append(i)
        for sampling, idx in groups.items():
            chosen = ground_batch(self.policy, [actions[i][0].traj for i in idx],
                                  [actions[i][1] for i in idx], [actions[i][2] for i in idx],
                                  [avail[i] for i in idx], cfg.grounding(), sampling,
                                  [actions[i][0].seed + len(actions[i][0].traj.steps)
                                   for i in idx])
            for i, a in zip(idx, chosen):
                out[i] = (actions[i][0], actions[i][1], a)
        return out

    def _pick(self, pending: deque, slot: int) -> _Episode:
        """The next episode for ``slot``: prefer one whose start state this slot has a snapshot
        of (within the next few pending), else the head of the queue."""
        if self.snapshots:
            mine = self._slot_states.get(slot, set())
            for i, e in enumerate(itertools.islice(pending, 64)):
                if e.start_k > 0 and (self._snap_key(e), e.start_k) in mine:
                    del pending[i]
                    return e
        return pending.popleft()

    def _start_call(self, r: RolloutRequest, e: _Episode, pid: str | None,
                    wanted: dict[str, set[int]]) -> tuple:
        if e.start_k == 0 or r.parent is None:
            return (r.task_id,)
        if self.snapshots and pid is not None:
            ks = sorted(wanted.get(pid, {e.start_k}))
            n = max(ks)
            return (r.task_id, r.parent.actions[:n], r.parent.observations[:n], e.start_k,
                    self._snap_key(e), ks, r.fresh_step_limit)
        k = e.start_k
        return (r.task_id, r.parent.actions[:k], r.parent.observations[:k], k, None, (),
                r.fresh_step_limit)

    @staticmethod
    def _snap_key(e: _Episode) -> str:
        """Snapshot cache key of the recorded trajectory an episode starts from."""
        return f"{e.key[0]}|{e.key[1]}"

    def _source(self, r: RolloutRequest, e: _Episode, pid: str | None) -> Provenance:
        sim = pid is not None and e.start_k > 0
        src = Provenance("simulation" if sim else "policy", self.policy.spec,
                         self.config.policy_version, e.start_k, pid if sim else None,
                         True if sim and r.fresh_step_limit else None, e.sample, e.seed,
                         r.sampling.record() if r.sampling is not None else None)
        return Provenance.from_dict({**src.to_dict(), **r.source}) if r.source else src

    def _begin(self, r: RolloutRequest, e: _Episode, res: StartResult, pid: str | None,
               stats: dict[str, Any]) -> None:
        """Build the episode's context from its start state."""
        if e.start_k > 0 and r.parent is not None:
            traj = r.parent.prefix(e.start_k)
            traj.initial_observation = res.initial_observation
            for s, sr in zip(traj.steps, res.results):
                s.observation, s.reward = sr.observation, sr.reward
            traj.meta = {"replay_match": res.match}
            if res.first_divergence is not None:
                traj.meta["replay_divergence"] = res.first_divergence
            stats["replay"][res.match] = stats["replay"].get(res.match, 0) + 1
            if res.restored:
                stats["snapshot_restores"] += 1
            if self.snapshots and pid is not None:
                self._slot_states.setdefault(e.slot, set()).update(
                    (self._snap_key(e), k) for k in self._wanted.get(pid, ())
                    if k <= len(res.results))
        else:
            traj = Trajectory(r.task_id, res.env_name, res.instruction, res.initial_observation)
        traj.source = self._source(r, e, pid)
        e.traj = traj
        e.env_steps += res.env_steps
        e.replay_steps += res.env_steps
        e.last = res.results[-1] if res.results else None


def _per_context(policy: Policy, attr: str, n: int) -> list[int] | None:
    """The policy's per-context count list ``attr`` of its last act call, if it set one."""
    xs = getattr(policy, attr, None)
    return [int(x) for x in xs] if isinstance(xs, (list, tuple)) and len(xs) == n else None


def _prompt_counters(policy: Policy) -> tuple[int, int] | None:
    """(prompt tokens, reused prompt tokens) of the policy's cumulative ``stats``, if any."""
    st = getattr(policy, "stats", None)
    try:
        return int(st.prompt_tokens), int(st.reused_tokens)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return None


def _prompt_counts(policy: Policy, before: tuple[int, int] | None, n: int
                   ) -> tuple[list[int] | None, list[int] | None]:
    """Per context of the last act call: (prompt tokens, prompt tokens computed after prefix
    reuse), from the policy's per-context lists, else its counters' increase split evenly."""
    prompt = _per_context(policy, "last_prompt_tokens", n)
    reused = _per_context(policy, "last_reused_tokens", n)
    if prompt is not None:
        return prompt, [p - r for p, r in zip(prompt, reused or [0] * n)]
    after = _prompt_counters(policy)
    if before is None or after is None:
        return None, None
    return _split(after[0] - before[0], n), _split(after[0] - before[0] - after[1] + before[1], n)


def _split(total: int, n: int) -> list[int]:
    """``total`` over ``n`` parts as evenly as integers allow (the parts sum to ``total``)."""
    q, r = divmod(total, n)
    return [q + (i < r) for i in range(n)]


def _progress(enabled: bool, title: str, total: int, done: int):
    if not enabled:
        return None, None
    from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from eef.progress import Progress
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("win {task.fields[win]:.1%}"),
                   TextColumn("{task.fields[sps]:.1f} steps/s"), TimeElapsedColumn(),
                   TimeRemainingColumn())
    bar.start()
    job = bar.add_task(title, total=total, completed=done, win=0.0, sps=0.0)
    return bar, job


def rollout(env: EnvSpec | Callable[[], TextEnv] | str, policy: Policy,
            requests: Sequence[RolloutRequest], out: str | os.PathLike | None = None,
            config: EngineConfig | None = None) -> RolloutResult:
    """Run ``requests`` with a fresh engine (pool built from ``config``, closed at the end)."""
    with RolloutEngine(env, policy, config) as engine:
        return engine.run(requests, out)
