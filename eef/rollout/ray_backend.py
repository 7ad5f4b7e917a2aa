"""The Ray backend of the env pool: one Ray actor per env slot (``rollout.backend: ray``).

The engine is unchanged: it batches the policy in the driver and sends each round's env calls
to the actors at once.  Actors can live on any node of a Ray cluster (``ray.address``), so
simulation scales past one machine.  Needs the optional extra: ``pip install 'eef[ray]'``.
"""

from __future__ import annotations

from typing import Any, Sequence

from eef.envs.base import EnvDiedError, EnvError
from eef.rollout.pool import Call, EnvFactory, EnvHost, EnvPool


class RayUnavailableError(ImportError):
    """Ray is not installed."""


def _ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailableError(
            "the ray rollout backend needs Ray: pip install 'eef[ray]' (ray>=2.9)") from e
    return ray


def connect(address: str | None = None):
    """Ray, initialised: joined at ``address`` (``"auto"``, ``"ray://h:10001"``) or a local
    instance started (None), unless this process is connected already."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False,
                 log_to_driver=False)
    return ray


class _HostActor:
    """An ``EnvHost`` inside a Ray actor."""

    def __init__(self, factory: EnvFactory, snapshot_cache: int):
        self.host = EnvHost(factory, snapshot_cache)

    def call(self, method: str, args: tuple) -> Any:
        return self.host.call(method, args)


class RayPool(EnvPool):
    """``size`` env actors.  ``address``: an existing cluster (``"auto"``, ``"ray://h:10001"``);
    None connects to a running local Ray or starts one.  ``num_cpus``: CPUs reserved per actor.
    A dead actor (node lost, process killed) or a call slower than ``call_timeout_s`` yields
    ``EnvDiedError``; ``restart`` replaces the actor."""

    def __init__(self, factory: EnvFactory, size: int, address: str | None = None,
                 num_cpus: float = 1.0, snapshot_cache: int = 64, call_timeout_s: float = 300.0):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        ray = connect(address)
        self.size, self.factory, self.snapshot_cache = size, factory, snapshot_cache
        self.call_timeout_s = call_timeout_s
        self._cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(_HostActor)
        self.actors = [self._cls.remote(factory, snapshot_cache) for _ in range(size)]
        outs = self.run([(s, "info", ()) for s in range(size)])  # wait until all are up
        for o in outs:
            if isinstance(o, BaseException):
                self.close()
                raise o

    def _error(self, slot: int, method: str, e: BaseException) -> BaseException:
        ray = _ray()
        if isinstance(e, ray.exceptions.RayTaskError):
            cause = getattr(e, "cause", None)
            return cause if isinstance(cause, BaseException) else EnvError(str(e))
        if isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)):
            return EnvDiedError(f"env actor {slot} died during {method!r}: {type(e).__name__}")
        if isinstance(e, ray.exceptions.GetTimeoutError):
            ray.kill(self.actors[slot], no_restart=True)
            return EnvDiedError(f"env actor {slot}: {method!r} timed out after "
                                f"{self.call_timeout_s}s; actor killed")
        return e

    def run(self, calls: Sequence[Call]) -> list[Any]:
        ray = _ray()
        refs = [self.actors[slot].call.remote(method, args) for slot, method, args in calls]
        out: list[Any] = []
        for (slot, method, _), ref in zip(calls, refs):
            try:
                out.append(ray.get(ref, timeout=self.call_timeout_s))
            except Exception as e:
                out.append(self._error(slot, method, e))
        return out

    def restart(self, slot: int) -> None:
        ray = _ray()
        try:
            ray.kill(self.actors[slot], no_restart=True)
        except Exception:
            pass
        self.actors[slot] = self._cls.remote(self.factory, self.snapshot_cache)
        out = self.run([(slot, "info", ())])[0]
        if isinstance(out, BaseException):
            raise out

    def pids(self) -> list[int]:
        return [o["pid"] if isinstance(o, dict) else -1
                for o in self.run([(s, "info", ()) for s in range(self.size)])]

    def close(self) -> None:
        ray = _ray()
        for a in getattr(self, "actors", []):
            try:
                ray.get(a.call.remote("close", ()), timeout=30)
            except Exception:
                pass
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
