"""Policy replicas: one policy spread over several endpoints (e.g. one vLLM server per GPU node).

``ReplicatedPolicy`` splits every batched ``act`` call into contiguous shards, one per replica,
runs the shards at once and returns the answers in the callers' order, so the engine sees one
policy.  A replica is built by a factory in the driver (``backend="local"``: its calls run in
threads) or inside a Ray actor (``backend="ray"``: the client lives on whichever node Ray
places it, e.g. next to the server it talks to).  Sharding is deterministic (the same batch
always goes to the same replicas in the same split) and each context keeps its own seed, so a
seeded endpoint answers the same whichever replica serves it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence

from eef.errors import EndpointError
from eef.policy import Sampling

if TYPE_CHECKING:
    from eef.trajectory import Trajectory

PolicyFactory = Callable[[], Any]


def shard_bounds(n: int, k: int) -> list[tuple[int, int]]:
    """``k`` contiguous ``[lo, hi)`` ranges covering ``range(n)``, sizes differing by at most 1
    (empty ranges when ``n < k``)."""
    q, r = divmod(n, k)
    out, lo = [], 0
    for i in range(k):
        hi = lo + q + (1 if i < r else 0)
        out.append((lo, hi))
        lo = hi
    return out


class _Local:
    def __init__(self, factory: PolicyFactory):
        self.policy = factory()

    def act(self, contexts, sampling, seeds):
        return self.policy.act(contexts, sampling, seeds), \
            getattr(self.policy, "last_generated_tokens", None)

    def spec(self) -> str:
        return self.policy.spec

    def release(self, release_fn: Callable[[Any], None] | None) -> None:
        if release_fn is not None:
            release_fn(self.policy)
        elif hasattr(self.policy, "close"):
            self.policy.close()


class _Remote:
    """A replica in a Ray actor; calls block the calling thread until the actor answers."""

    def __init__(self, factory: PolicyFactory, num_cpus: float, timeout_s: float):
        import ray
        self.ray, self.timeout_s = ray, timeout_s
        cls = ray.remote(num_cpus=num_cpus, max_restarts=0)(_Local)
        self.actor = cls.options(scheduling_strategy="SPREAD").remote(factory)
        self._spec = self._get(self.actor.spec.remote(), "start")

    def _get(self, ref, what: str):
        ray = self.ray
        try:
            return ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, BaseException) else EndpointError(str(e))) from None
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
            raise EndpointError(f"policy replica died or timed out during {what}: "
                                f"{type(e).__name__}") from e

    def act(self, contexts, sampling, seeds):
        return self._get(self.actor.act.remote(list(contexts), sampling, seeds), "act")

    def spec(self) -> str:
        return self._spec

    def release(self, release_fn: Callable[[Any], None] | None) -> None:
        try:
            self._get(self.actor.release.remote(release_fn), "release")
        except EndpointError:
            pass  # a dead replica holds nothing to release
        self.ray.kill(self.actor, no_restart=True)


class ReplicatedPolicy:
    """The ``Policy`` protocol over replicas built by ``factories`` (one each).

    ``backend``: ``local`` (replicas in this process, shards in threads) or ``ray`` (one Ray
    actor per replica, ``num_cpus`` reserved each; Ray must be initialised or is started
    locally / joined at ``ray_address``).  ``release_fn`` frees a replica's policy at
    ``release()`` (e.g. ``eef.models.served.release`` unloads a served LoRA adapter); default:
    its ``close()``.  ``spec`` is the first replica's spec (what the replicas serve)."""

    def __init__(self, factories: Sequence[PolicyFactory], backend: str = "local", *,
                 ray_address: str | None = None, num_cpus: float = 0.0,
                 timeout_s: float = 3600.0, release_fn: Callable[[Any], None] | None = None):
        if not factories:
            raise ValueError("ReplicatedPolicy needs at least one replica")
        if backend not in ("local", "ray"):
            raise ValueError(f"replica backend must be local or ray, not {backend!r}")
        self.backend, self.release_fn = backend, release_fn
        if backend == "ray":
            from eef.rollout.ray_backend import connect
            connect(ray_address)
        self.replicas: list[Any] = []
        try:
            for f in factories:
                self.replicas.append(_Remote(f, num_cpus, timeout_s) if backend == "ray"
                                     else _Local(f))
        except BaseException:
            self.release()
            raise
        self.spec = self.replicas[0].spec()
        self.calls = [0] * len(self.replicas)  # contexts answered by each replica
        self.last_generated_tokens: list[int] | None = None
        self._ex = ThreadPoolExecutor(len(self.replicas))

    def act(self, contexts: Sequence["Trajectory"], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        if seeds is not None and len(seeds) != len(contexts):
            raise ValueError(f"{len(seeds)} seeds for {len(contexts)} contexts")
        jobs = [(i, lo, hi) for i, (lo, hi) in enumerate(shard_bounds(len(contexts),
                                                                       len(self.replicas)))
                if hi > lo]
        futs = [self._ex.submit(self.replicas[i].act, list(contexts[lo:hi]), sampling,
                                None if seeds is None else list(seeds[lo:hi]))
                for i, lo, hi in jobs]
        out: list[str] = []
        counts: list[int] | None = []
        for (i, lo, hi), fut in zip(jobs, futs):
            texts, n = fut.result()
            if len(texts) != hi - lo:
                raise EndpointError(f"policy replica {i} returned {len(texts)} answers for "
                                    f"{hi - lo} contexts")
            out += texts
            self.calls[i] += hi - lo
            ok = isinstance(n, (list, tuple)) and len(n) == hi - lo
            counts = counts + [int(x) for x in n] if ok and counts is not None else None
        self.last_generated_tokens = counts
        return out

    def release(self) -> None:
        """Free every replica (and its actor)."""
        for r in self.replicas:
            r.release(self.release_fn)
        self.replicas = []
        if hasattr(self, "_ex"):
            self._ex.shutdown(wait=False)

    close = release
