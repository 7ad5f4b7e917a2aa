"""Env conformance checker, in the spirit of Gymnasium's ``env_checker``.

``check_env(env, task_ids, actions_for=...)`` raises ``EnvConformanceError`` listing every
violated rule; it checks:

* tasks: non-empty, unique string ids, ``task(id)`` round-trips, unknown ids raise
  ``UnknownTaskError``;
* types: ``reset`` returns ``str``; ``step`` returns ``StepResult`` with ``str`` observation,
  ``float`` reward, ``bool`` done, ``dict`` info holding ``valid`` (bool) and ``score`` (float in
  [0, 1]), and ``success`` (bool) once done; ``available_actions`` returns a list of ``str``;
* determinism: two resets of a task give the same observation; ``replay`` of a recorded action
  sequence reproduces the recorded observations (``exact``, or ``unordered`` when
  ``allow_unordered``);
* invalid actions: empty, unknown verb, 100 KB, odd unicode — no exception, ``valid`` false, the
  episode goes on (``done`` false) and the step counts;
* step limit: an episode of only invalid actions ends (``done``) after ``env.max_steps`` steps;
* ``snapshot``/``restore`` when ``supports_snapshot``: restoring gives back the observation.
"""

from __future__ import annotations

from typing import Callable, Sequence

from eef.envs.base import StepResult, TextEnv, UnknownTaskError

BAD_ACTIONS = ["", "   ", "fly[to the moon]", "x" * 100_000, "click[\udcff\u202e\u0000]",
               "\u00e9\u00e8\u4e2d\u6587 \U0001f600", "search[", "click]["]


class EnvConformanceError(AssertionError):
    pass


def _check_step(r: object, where: str, errs: list[str]) -> None:
    if not isinstance(r, StepResult):
        errs.append(f"{where}: step() returned {type(r).__name__}, not StepResult")
        return
    if not isinstance(r.observation, str):
        errs.append(f"{where}: observation is {type(r.observation).__name__}, not str")
    if not isinstance(r.reward, float):
        errs.append(f"{where}: reward is {type(r.reward).__name__}, not float")
    if not isinstance(r.done, bool):
        errs.append(f"{where}: done is {type(r.done).__name__}, not bool")
    if not isinstance(r.info, dict):
        errs.append(f"{where}: info is {type(r.info).__name__}, not dict")
        return
    if not isinstance(r.info.get("valid"), bool):
        errs.append(f"{where}: info['valid'] missing or not bool")
    sc = r.info.get("score")
    if not isinstance(sc, (int, float)) or not -1e-9 <= float(sc) <= 1 + 1e-9:
        errs.append(f"{where}: info['score'] missing or outside [0, 1]: {sc!r}")
    if r.done and not isinstance(r.info.get("success"), bool):
        errs.append(f"{where}: done but info['success'] missing or not bool")


def check_env(env: TextEnv, task_ids: Sequence[str],
              actions_for: Callable[[str], Sequence[str]] | None = None,
              allow_unordered: bool = False, check_step_limit: bool = True) -> None:
    """Check ``env`` on ``task_ids``.  ``actions_for(task_id)`` gives an action sequence to
    record and replay (e.g. an expert's); without it the first available action is used."""
    errs: list[str] = []
    tasks = env.tasks("all")
    ids = [t.id for t in tasks]
    if not ids:
        errs.append("tasks('all') is empty")
    if len(set(ids)) != len(ids):
        errs.append("task ids are not unique")
    if any(not isinstance(i, str) for i in ids):
        errs.append("task ids must be str")
    try:
        env.task("__no_such_task__")
        errs.append("task() of an unknown id did not raise UnknownTaskError")
    except UnknownTaskError:
        pass
    try:
        env.reset("__no_such_task__")
        errs.append("reset() of an unknown id did not raise UnknownTaskError")
    except UnknownTaskError:
        pass

    for tid in task_ids:
        if env.task(tid).id != tid:
            errs.append(f"{tid}: task(id).id differs")
        o1 = env.reset(tid)
        if not isinstance(o1, str):
            errs.append(f"{tid}: reset() returned {type(o1).__name__}, not str")
        acts = env.available_actions()
        if not isinstance(acts, list) or not all(isinstance(a, str) for a in acts):
            errs.append(f"{tid}: available_actions() must return list[str]")
        o2 = env.reset(tid)
        if o1 != o2:
            errs.append(f"{tid}: two resets gave different observations")

        # record an episode, then replay it
        actions = list(actions_for(tid)) if actions_for else []
        if not actions:
            env.reset(tid)
            avail = [a for a in env.available_actions() if "<" not in a or a.startswith("click[")]
            actions = avail[:1]
        env.reset(tid)
        recorded: list[str] = []
        for i, a in enumerate(actions):
            r = env.step(a)
            _check_step(r, f"{tid} step {i}", errs)
            recorded.append(r.observation)
            if r.done:
                break
        rep = env.replay(tid, actions[: len(recorded)], recorded)
        ok = ("exact", "unordered") if allow_unordered else ("exact",)
        if rep.match not in ok:
            errs.append(f"{tid}: replay diverged ({rep.match}) at step {rep.first_divergence}")
        if rep.initial_observation != o1:
            errs.append(f"{tid}: replay's first observation differs from reset()'s")

        # invalid actions
        env.reset(tid)
        for j, bad in enumerate(BAD_ACTIONS):
            try:
                r = env.step(bad)
            except Exception as e:  # noqa: BLE001 - the rule is "never raises"
                errs.append(f"{tid}: bad action #{j} raised {type(e).__name__}: {e}")
                break
            _check_step(r, f"{tid} bad action #{j}", errs)
            if r.info.get("valid") is not False:
                errs.append(f"{tid}: bad action #{j} not reported invalid")
            if r.done and j + 1 < env.max_steps:
                errs.append(f"{tid}: bad action #{j} ended the episode")
                break
            if r.done:
                break

        # step limit
        if check_step_limit:
            env.reset(tid)
            n, done = 0, False
            while not done and n < env.max_steps + 5:
                r = env.step("")
                n += 1
                done = r.done
            if not done or n != env.max_steps:
                errs.append(f"{tid}: {n} invalid steps ended={done}; expected the episode to "
                            f"end at max_steps={env.max_steps}")
            elif r.info.get("success") is not False:
                errs.append(f"{tid}: a step-limit end must not be a success")

        # snapshots
        if env.supports_snapshot:
            o = env.reset(tid)
            snap = env.snapshot()
            if actions:
                env.step(actions[0])
            if env.restore(snap) != o:
                errs.append(f"{tid}: restore(snapshot()) did not give the snapshot's observation")

    if errs:
        raise EnvConformanceError(f"{env.name} fails {len(errs)} conformance rule(s):\n- "
                                  + "\n- ".join(errs))
