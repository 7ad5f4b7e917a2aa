"""``HttpEnv``: a ``TextEnv`` whose env runs in an eef env server (``eef.envs.server``).

    env = eef.envs.make("http", url="http://127.0.0.1:8000", env="webshop")

Each ``HttpEnv`` is one server session.  Errors map back to the env contract: an unknown task
raises ``UnknownTaskError``; a dead env, an expired session or an unreachable server raise
``EnvDiedError`` (the rollout engine then retries the episode on a fresh ``HttpEnv``).
"""

from __future__ import annotations

from typing import Any, Sequence

import httpx

from eef.envs.base import (EnvDiedError, EnvError, EpisodeNotStartedError, ReplayResult,
                           Split, StepResult, Task, TextEnv, UnknownTaskError)


class SessionLostError(EnvDiedError):
    """The server no longer knows this session (expired after idling, or closed)."""


class SessionLimitError(EnvError):
    """The server has reached its session limit."""


class HttpEnv(TextEnv):
    """Client of one env-server session.

    ``url``: the server (``http://host:port``); ``env``: the env name the server must serve
    (checked; None accepts any); ``timeout_s``: per-request timeout; ``env_kwargs``: constructor
    arguments for the server-side env (only if the server allows client kwargs).
    """

    def __init__(self, url: str, env: str | None = None, timeout_s: float = 120.0,
                 **env_kwargs: Any):
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s)
        self.session: str | None = None
        self._tasks: dict[str, list[Task]] = {}
        self._task: dict[str, Task] = {}
        try:
            health = self._request("GET", "/health")
            if env is not None and health["env"] != env:
                raise EnvError(f"{self.url} serves env {health['env']!r}, not {env!r}")
            created = self._request("POST", "/sessions", json={"kwargs": env_kwargs})
        except BaseException:
            self._client.close()
            raise
        self.session = created["session"]
        self.name = created["name"]  # type: ignore[misc]  # the remote env's name
        self.base_name = created.get("base_name", self.name)
        self.max_steps = int(created["max_steps"])
        self.restarts_step_limit = bool(created.get("restarts_step_limit", False))  # type: ignore[misc]

    # -- transport -----------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._client.request(method, path, **kw)
        except httpx.TransportError as e:
            raise EnvDiedError(f"env server {self.url} unreachable ({type(e).__name__}: {e})") from e
        if r.status_code < 400:
            return r.json()
        try:
            body = r.json()
            code, detail = body.get("error", ""), body.get("detail", r.text)
        except ValueError:
            code, detail = "", r.text
        if not isinstance(detail, str):
            detail = str(detail)
        msg = f"{self.url}{path}: HTTP {r.status_code} {code}: {detail}"
        if code == "unknown_session":
            raise SessionLostError(msg)
        if code == "unknown_task":
            raise UnknownTaskError(detail)
        if code == "episode_not_started":
            raise EpisodeNotStartedError(detail)
        if code == "session_limit":
            raise SessionLimitError(msg)
        if r.status_code == 503 or r.status_code >= 500:
            raise EnvDiedError(msg)
        raise EnvError(msg)

    def _sess(self) -> str:
        if self.session is None:
            raise EnvError("HttpEnv is closed")
        return f"/sessions/{self.session}"

    # -- the env contract ----------------------------------------------------------------
    def tasks(self, split: Split = "all") -> list[Task]:
        if split not in self._tasks:
            rows = self._request("GET", "/tasks", params={"split": split})
            self._tasks[split] = [Task(r["id"], r["env"], r.get("split"), r["instruction"],
                                       r.get("meta") or {}) for r in rows]
        return self._tasks[split]

    def task(self, task_id: str) -> Task:
        if task_id not in self._task:
            r = self._request("GET", "/task", params={"task_id": task_id})
            self._task[task_id] = Task(r["id"], r["env"], r.get("split"), r["instruction"],
                                       r.get("meta") or {})
        return self._task[task_id]

    def reset(self, task_id: str) -> str:
        return self._request("POST", f"{self._sess()}/reset", json={"task_id": task_id})["observation"]

    def step(self, action: str) -> StepResult:
        d = self._request("POST", f"{self._sess()}/step", json={"action": action})
        return StepResult(d["observation"], float(d["reward"]), bool(d["done"]), d.get("info") or {})

    def available_actions(self) -> list[str]:
        return list(self._request("GET", f"{self._sess()}/available_actions")["actions"])

    def replay(self, task_id: str, actions: Sequence[str],
               expected: Sequence[str] | None = None) -> ReplayResult:
        """One round trip: the server replays (same semantics as ``TextEnv.replay``)."""
        if expected is not None:
            expected = list(expected)[: len(actions)]
            if len(expected) < len(actions):  # the server wants one per action
                return super().replay(task_id, actions, expected)
        d = self._request("POST", f"{self._sess()}/replay",
                          json={"task_id": task_id, "actions": list(actions), "expected": expected})
        results = [StepResult(r["observation"], float(r["reward"]), bool(r["done"]),
                              r.get("info") or {}) for r in d["results"]]
        return ReplayResult(d["observation"], d["initial_observation"], results, d["match"],
                            d["first_divergence"], bool(d["done"]))

    def restart_step_limit(self) -> None:
        self._request("POST", f"{self._sess()}/restart_step_limit")

    def close(self) -> None:
        sid, self.session = self.session, None
        if sid is not None:
            try:
                self._client.delete(f"/sessions/{sid}")
            except httpx.HTTPError:
                pass
        self._client.close()
