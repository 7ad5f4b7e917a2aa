"""Env pools: N env slots the rollout engine drives concurrently.

Every backend holds one ``EnvHost`` per slot (an env plus the snapshots taken on it) and runs a
batch of calls ``(slot, method, args)`` on their slots at the same time:

* ``LocalPool``: hosts in this process; calls run one after the other (``threads=0``, best for
  pure-Python envs such as WebShop, which hold the GIL) or in a thread pool.
* ``ProcessPool``: one worker process per slot (ScienceWorld: one JVM per worker).  A worker that
  dies or hangs is reported as ``EnvDiedError`` and restarted by ``restart(slot)``.
* ``RayPool`` (``eef.rollout.ray_backend``): one Ray actor per slot.

A batch returns one result per call; a failed call returns its exception object instead of
raising, so one dead env never takes the other episodes of the batch down with it.
"""

from __future__ import annotations

import abc
import multiprocessing as mp
import os
import threading
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from eef.envs.base import (EnvDiedError, EnvError, ReplayMatch, StepResult, TextEnv,
                           compare_observations)

EnvFactory = Callable[[], TextEnv]
Call = tuple[int, str, tuple]


@dataclass(frozen=True)
class EnvSpec:
    """A picklable env factory: ``eef.envs.make(name, **kwargs)`` (what process and Ray workers
    receive).  Any other zero-argument picklable callable returning a ``TextEnv`` works too."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    def __call__(self) -> TextEnv:
        from eef.envs import make
        return make(self.name, **self.kwargs)


@dataclass
class StartResult:
    """The state an episode starts from: the first observation and, when starting from state k
    of a recorded trajectory, the k replayed steps (and how well they matched the record)."""

    task_id: str
    env_name: str
    instruction: str
    initial_observation: str
    results: list[StepResult]
    match: ReplayMatch = "unchecked"
    first_divergence: int | None = None
    done: bool = False
    env_steps: int = 0
    restored: bool = False


def replay_match(results: Sequence[StepResult], expected: Sequence[str] | None
                 ) -> tuple[ReplayMatch, int | None]:
    """The ``(match, first_divergence)`` of replayed steps, by ``TextEnv.replay``'s rule."""
    if expected is None:
        return "unchecked", None
    match: ReplayMatch = "exact"
    first = None
    for i, (r, want) in enumerate(zip(results, expected)):
        m = compare_observations(r.observation, want)
        if m != "exact" and first is None:
            first = i
        if m == "different" or (m == "unordered" and match == "exact"):
            match = m
    return match, first


class SnapshotStore:
    """Snapshots by (recorded trajectory key, state k), least recently used dropped first.
    Thread-safe; shared by the hosts of a ``LocalPool`` (envs of one process restore each
    other's snapshots), private to a host elsewhere."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self.items: OrderedDict[tuple[str, int], tuple[Any, str, list[StepResult]]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> tuple[Any, str, list[StepResult]] | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return hit

    def put(self, key: tuple[str, int], value: tuple[Any, str, list[StepResult]]) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.items.clear()

    def __len__(self) -> int:
        return len(self.items)


class EnvHost:
    """One env and the snapshots taken on it.  Runs wherever the env lives (this process, a
    worker process, a Ray actor).  An ``EnvDiedError`` from the env closes it; the next call
    recreates it from the factory."""

    def __init__(self, factory: EnvFactory, snapshot_cache: int = 64,
                 store: SnapshotStore | None = None):
        self.factory = factory
        self.env: TextEnv | None = factory()
        self.shared = store is not None
        self.snaps = store if store is not None else SnapshotStore(snapshot_cache)

    # -- plumbing --------------------------------------------------------------------------
    def _env(self) -> TextEnv:
        if self.env is None:
            self.env = self.factory()
        return self.env

    def call(self, method: str, args: tuple = ()) -> Any:
        if method.startswith("_") or method == "call":
            raise EnvError(f"EnvHost has no public method {method!r}")
        try:
            return getattr(self, method)(*args)
        except EnvDiedError:
            self.recreate()
            raise

    def recreate(self) -> None:
        """Drop the env (and its own snapshots); the next call builds a fresh one."""
        env, self.env = self.env, None
        if not self.shared:
            self.snaps.clear()
        if env is not None:
            try:
                env.close()
            except Exception:  # a dead env may fail to close; it is being replaced anyway
                pass

    def info(self) -> dict[str, Any]:
        env = self._env()
        return {"name": env.name, "supports_snapshot": bool(env.supports_snapshot),
                "restarts_step_limit": bool(env.restarts_step_limit),
                "max_steps": env.max_steps, "pid": os.getpid(),
                "env_pid": getattr(env, "jvm_pid", None)}

    def unknown_tasks(self, task_ids: Sequence[str]) -> list[str]:
        """The ids among ``task_ids`` the env does not know (``env.task`` raises)."""
        from eef.envs.base import UnknownTaskError
        env, bad = self._env(), []
        for tid in task_ids:
            try:
                env.task(tid)
            except (UnknownTaskError, ValueError):
                bad.append(tid)
        return bad

    def close(self) -> None:
        self.recreate()

    # -- episodes --------------------------------------------------------------------------
    def start(self, task_id: str, actions: Sequence[str] = (), expected: Sequence[str] | None = None,
              k: int | None = None, snap_key: str | None = None,
              snap_ks: Sequence[int] = (), fresh_limit: bool = False) -> StartResult:
        """Put the env at state ``k`` (default ``len(actions)``) of ``task_id``: after the first
        ``k`` of the recorded ``actions`` (whose recorded observations are ``expected``).
        ``fresh_limit``: the step limit then counts from state ``k`` (``restart_step_limit``).

        ``k == 0``: ``reset``.  An env that snapshots, given ``snap_key`` (an id of the recorded
        trajectory): restore the stored snapshot of ``(snap_key, k)`` if there is one; otherwise
        replay the actions once, snapshotting at every state of ``snap_ks`` on the way (the
        states other samples of the same recorded trajectory will ask for; ``actions`` must
        reach the largest).  Otherwise ``env.replay`` of the first ``k`` actions.
        """
        res = self._start(task_id, actions, expected, k, snap_key, snap_ks)
        if fresh_limit and res.results and not res.done:
            self._env().restart_step_limit()
        return res

    def _start(self, task_id: str, actions: Sequence[str], expected: Sequence[str] | None,
               k: int | None, snap_key: str | None, snap_ks: Sequence[int]) -> StartResult:
        env = self._env()
        k = len(actions) if k is None else k
        if not 0 <= k <= len(actions):
            raise EnvError(f"start state {k} outside the {len(actions)} recorded actions")
        instruction = env.task(task_id).instruction
        if k == 0:
            obs = env.reset(task_id)
            return StartResult(task_id, env.name, instruction, obs, [], env_steps=0)
        exp_k = None if expected is None else list(expected[:k])
        if not (env.supports_snapshot and snap_key is not None):
            rep = env.replay(task_id, list(actions[:k]), exp_k)
            return StartResult(task_id, env.name, instruction, rep.initial_observation, rep.results,
                               rep.match, rep.first_divergence, rep.done, len(rep.results))
        hit = self.snaps.get((snap_key, k))
        steps = 0
        if hit is None:
            # one pass over the longest wanted prefix, snapshotting at each wanted state
            want = sorted({j for j in snap_ks if 0 < j <= len(actions)} | {k})
            obs0 = env.reset(task_id)
            results: list[StepResult] = []
            for j in range(want[-1] + 1):
                if j in want:
                    snap = (env.snapshot(), obs0, list(results))
                    self.snaps.put((snap_key, j), snap)
                    if j == k:
                        hit = snap
                if j == want[-1] or (results and results[-1].done):
                    break
                results.append(env.step(actions[j]))
                steps += 1
            if hit is None:  # the recorded actions ended the episode before state k
                results = results[:k]
                match, first = replay_match(results, exp_k)
                return StartResult(task_id, env.name, instruction, obs0, results, match, first,
                                   True, steps)
            if want[-1] != k:
                env.restore(hit[0])
        else:
            env.restore(hit[0])
        _, obs0, results = hit
        match, first = replay_match(results, exp_k)
        return StartResult(task_id, env.name, instruction, obs0, list(results), match, first,
                           bool(results and results[-1].done), steps, restored=steps == 0)

    def step(self, action: str) -> StepResult:
        return self._env().step(action)

    def step_grounded(self, action: str) -> tuple[str, StepResult]:
        """Ground ``action`` in the state's admissible actions (``eef.rollout.grounding``), then
        step; returns the executed action and the step's result."""
        from eef.rollout.grounding import ground_action
        env = self._env()
        executed = ground_action(action, env.available_actions())
        return executed, env.step(executed)

    def available_actions(self) -> list[str]:
        return self._env().available_actions()


class EnvPool(abc.ABC):
    """``size`` env slots; ``run`` executes one call per slot concurrently."""

    size: int

    @abc.abstractmethod
    def run(self, calls: Sequence[Call]) -> list[Any]:
        """Results in call order; a failed call yields its exception object."""

    @abc.abstractmethod
    def restart(self, slot: int) -> None:
        """Replace the env of ``slot`` by a fresh one (after an ``EnvDiedError``)."""

    def info(self) -> dict[str, Any]:
        out = self.run([(0, "info", ())])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def pids(self) -> list[int]:
        """Process id hosting each slot's env."""
        out = self.run([(s, "info", ()) for s in range(self.size)])
        return [o["pid"] if isinstance(o, dict) else -1 for o in out]

    def close(self) -> None:
        pass

    def __enter__(self) -> "EnvPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalPool(EnvPool):
    """Envs in this process.  With ``share_snapshots`` all slots share one snapshot store (an
    env restores a snapshot another instance of its class took: true of WebShop, whose
    snapshots are plain copies of its page state)."""

    shared_snapshots: bool

    def __init__(self, factory: EnvFactory, size: int, threads: int = 0, snapshot_cache: int = 64,
                 share_snapshots: bool = True):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.factory, self.size, self.snapshot_cache = factory, size, snapshot_cache
        self.shared_snapshots = share_snapshots
        store = SnapshotStore(snapshot_cache) if share_snapshots else None
        self.hosts: list[EnvHost] = []
        try:
            for _ in range(size):
                self.hosts.append(EnvHost(factory, snapshot_cache, store))
        except BaseException:
            self.close()
            raise
        self.executor = ThreadPoolExecutor(threads) if threads > 0 else None

    def _one(self, call: Call) -> Any:
        slot, method, args = call
        try:
            return self.hosts[slot].call(method, args)
        except Exception as e:
            return e

    def run(self, calls: Sequence[Call]) -> list[Any]:
        if self.executor is None or len(calls) <= 1:
            return [self._one(c) for c in calls]
        return list(self.executor.map(self._one, calls))

    def restart(self, slot: int) -> None:
        self.hosts[slot].recreate()

    def close(self) -> None:
        for h in self.hosts:
            h.close()
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


# -- worker processes -----------------------------------------------------------------------
def _worker_main(conn: Any, factory: EnvFactory, snapshot_cache: int) -> None:
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        host = EnvHost(factory, snapshot_cache)
        conn.send(("ok", os.getpid()))
    except BaseException as e:  # report a failed start instead of dying silently
        conn.send(("err", _portable(e)))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        method, args = msg
        try:
            conn.send(("ok", host.call(method, args)))
        except BaseException as e:
            conn.send(("err", _portable(e)))
    host.close()


def _portable(e: BaseException) -> BaseException:
    """The exception itself if it pickles, else an ``EnvError`` carrying its text."""
    import pickle
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return EnvError(f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(e))}")


class ProcessPool(EnvPool):
    """One worker process per slot (``spawn`` start method: safe with JVMs and threads).

    ``factory`` must pickle (an ``EnvSpec`` or a module-level callable).  A call that finds its
    worker dead, or that takes longer than ``call_timeout_s``, returns ``EnvDiedError``; the
    worker is then killed and ``restart`` starts a new one.
    """

    def __init__(self, factory: EnvFactory, size: int, call_timeout_s: float = 300.0,
                 start_timeout_s: float = 300.0, snapshot_cache: int = 64):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.factory, self.size = factory, size
        self.call_timeout_s, self.start_timeout_s = call_timeout_s, start_timeout_s
        self.snapshot_cache = snapshot_cache
        self.ctx = mp.get_context("spawn")
        self.procs: list[Any] = [None] * size
        self.conns: list[Any] = [None] * size
        try:
            for s in range(size):
                self._launch(s)
            for s in range(size):
                self._await_start(s)
        except BaseException:
            self.close()
            raise

    def _launch(self, slot: int) -> None:
        parent, child = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker_main, args=(child, self.factory, self.snapshot_cache),
                             daemon=True, name=f"eef-env-{slot}")
        p.start()
        child.close()
        self.procs[slot], self.conns[slot] = p, parent

    def _await_start(self, slot: int) -> None:
        conn = self.conns[slot]
        if not conn.poll(self.start_timeout_s):
            self._kill(slot)
            raise EnvDiedError(f"env worker {slot} did not start within {self.start_timeout_s}s")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError) as e:
            raise EnvDiedError(
                f"env worker {slot} died while starting (its error is on stderr; under the "
                f"'{self.ctx.get_start_method()}' start method a script must create the pool "
                "inside `if __name__ == '__main__':`)") from e
        if status == "err":
            raise payload

    def pids(self) -> list[int]:
        return [p.pid if p is not None else -1 for p in self.procs]

    def run(self, calls: Sequence[Call]) -> list[Any]:
        out: list[Any] = [None] * len(calls)
        sent: list[int] = []
        for i, (slot, method, args) in enumerate(calls):
            try:
                self.conns[slot].send((method, args))
                sent.append(i)
            except (OSError, BrokenPipeError, AttributeError) as e:
                out[i] = self._died(slot, f"could not send {method!r}: {e}")
        for i in sent:
            slot, method, _ = calls[i]
            conn = self.conns[slot]
            try:
                if not conn.poll(self.call_timeout_s):
                    self._kill(slot)
                    out[i] = EnvDiedError(f"env worker {slot}: {method!r} timed out after "
                                          f"{self.call_timeout_s}s; worker killed")
                    continue
                status, payload = conn.recv()
            except (EOFError, OSError) as e:
                out[i] = self._died(slot, f"connection lost during {method!r} ({type(e).__name__})")
                continue
            out[i] = payload  # a result, or the exception the env raised
        return out

    def _died(self, slot: int, what: str) -> EnvDiedError:
        p = self.procs[slot]
        code = None
        if p is not None:
            p.join(timeout=1.0)
            code = p.exitcode
        return EnvDiedError(f"env worker {slot} (pid {getattr(p, 'pid', '?')}) died: {what}; "
                            f"exit code {code}")

    def _kill(self, slot: int) -> None:
        p, conn = self.procs[slot], self.conns[slot]
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass
        if p is not None and p.is_alive():
            p.kill()
            p.join(timeout=10)
        self.procs[slot], self.conns[slot] = None, None

    def restart(self, slot: int) -> None:
        self._kill(slot)
        self._launch(slot)
        self._await_start(slot)

    def close(self) -> None:
        for s in range(self.size):
            conn, p = self.conns[s], self.procs[s]
            if conn is not None:
                try:
                    conn.send(None)
                except OSError:
                    pass
            if p is not None:
                p.join(timeout=15)
            self._kill(s)
