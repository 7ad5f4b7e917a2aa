"""An HTTP server for any eef env, so envs can live in another process, container or machine
(the pattern of AgentGym's env servers).  The client is ``eef.envs.http.HttpEnv``.

One *session* is one env instance.  API (JSON bodies and replies):

===========================================  ========================================================================
``GET  /health``                             ``{"env", "sessions", "max_sessions"}``
``GET  /tasks?split=all``                    ``[{"id", "env", "split", "instruction", "meta"}]``
``GET  /task?task_id=ID``                    one task (404 ``unknown_task``)
``POST /sessions``  ``{"kwargs": {}}``       ``{"session", "name", "base_name", "max_steps", "restarts_step_limit"}``
``POST /sessions/{sid}/reset``               ``{"task_id"}`` -> ``{"observation"}``
``POST /sessions/{sid}/step``                ``{"action"}`` -> ``{"observation", "reward", "done", "info"}``
``GET  /sessions/{sid}/available_actions``   ``{"actions": [...]}``
``POST /sessions/{sid}/replay``              ``{"task_id", "actions", "expected"?}`` -> a ``ReplayResult``
``POST /sessions/{sid}/restart_step_limit``  ``{}``: the step limit counts from the current state
``DELETE /sessions/{sid}``                   closes the env
===========================================  ========================================================================

Errors are ``{"error": CODE, "detail": TEXT}`` with status 404 (``unknown_session``,
``unknown_task``), 409 (``episode_not_started``), 413 (``body_too_large``), 429
(``session_limit``), 503 (``env_died``: the session is gone), 400 (other env errors), 422 (a
malformed body).  The server binds 127.0.0.1 unless told otherwise, bounds request bodies, caps
the number of sessions and closes sessions idle for longer than ``idle_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, Field

from eef.envs.base import (EnvDiedError, EnvError, EpisodeNotStartedError, TextEnv,
                           UnknownTaskError)


class CreateBody(BaseModel):
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ResetBody(BaseModel):
    task_id: str


class StepBody(BaseModel):
    action: str


class ReplayBody(BaseModel):
    task_id: str
    actions: list[str]
    expected: list[str] | None = None


@dataclass
class ServerConfig:
    """Limits of an env server (``eef env serve`` options)."""

    host: str = field(default="127.0.0.1", metadata={
        "help": "Interface to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    max_sessions: int = field(default=64, metadata={
        "help": "Most env sessions alive at once; more get HTTP 429."})
    idle_timeout_s: float = field(default=600.0, metadata={
        "help": "A session unused for this long is closed."})
    max_body_bytes: int = field(default=1 << 20, metadata={
        "help": "Largest request body accepted (HTTP 413 beyond)."})
    allow_client_kwargs: bool = field(default=False, metadata={
        "help": "Let clients pass env constructor kwargs when creating a session."})


class _ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass
class _Session:
    env: TextEnv
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


class SessionStore:
    """The live sessions of a server (thread-safe)."""

    def __init__(self, factory: Callable[..., TextEnv], config: ServerConfig):
        self.factory, self.config = factory, config
        self.sessions: dict[str, _Session] = {}
        self.lock = threading.Lock()
        self.created = 0
        self.reaped = 0

    def create(self, kwargs: dict[str, Any]) -> tuple[str, TextEnv]:
        self.reap()
        with self.lock:
            if len(self.sessions) >= self.config.max_sessions:
                raise _ApiError(429, "session_limit",
                                f"session limit reached ({self.config.max_sessions}); close "
                                "sessions or wait for idle ones to expire")
            sid = secrets.token_hex(8)
            self.sessions[sid] = None  # type: ignore[assignment]  # reserve the slot
        try:
            env = self.factory(**kwargs)
        except BaseException:
            with self.lock:
                self.sessions.pop(sid, None)
            raise
        with self.lock:
            self.sessions[sid] = _Session(env)
            self.created += 1
        return sid, env

    @contextlib.contextmanager
    def use(self, sid: str):
        with self.lock:
            s = self.sessions.get(sid)
        if s is None:
            raise _ApiError(404, "unknown_session",
                            f"unknown session {sid!r} (never created, closed or expired)")
        with s.lock:
            s.last_used = time.monotonic()
            try:
                yield s.env
            except EnvDiedError:
                self.close(sid)
                raise
            finally:
                s.last_used = time.monotonic()

    def close(self, sid: str) -> bool:
        with self.lock:
            s = self.sessions.pop(sid, None)
        if s is None:
            return False
        try:
            s.env.close()
        except Exception:
            pass
        return True

    def reap(self) -> int:
        """Close sessions idle for longer than the timeout; returns how many."""
        now = time.monotonic()
        with self.lock:
            old = [sid for sid, s in self.sessions.items()
                   if s is not None and not s.lock.locked()
                   and now - s.last_used > self.config.idle_timeout_s]
        n = sum(self.close(sid) for sid in old)
        self.reaped += n
        return n

    def close_all(self) -> None:
        for sid in list(self.sessions):
            self.close(sid)


class _BodyLimit:
    """ASGI middleware: reject request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _reject(self, send: Any) -> None:
        body = json.dumps({"error": "body_too_large",
                           "detail": f"request body over {self.max_bytes} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                too_big = int(cl) > self.max_bytes
            except ValueError:
                too_big = True
            if too_big:
                return await self._reject(send)
            return await self.app(scope, receive, send)
        # no length given (chunked): buffer up to the limit, then hand the body on
        chunks, total, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunks.append(msg.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await self._reject(send)
            more = msg.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(env: str | Callable[..., TextEnv], config: ServerConfig | None = None,
               **env_kwargs: Any):
    """The FastAPI app serving ``env`` (a registered env name or a factory taking kwargs)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    config = config or ServerConfig()
    if isinstance(env, str):
        from eef.envs import env_class
        cls = env_class(env)
        env_label = env
    else:
        cls, env_label = env, getattr(env, "name", getattr(env, "__name__", "env"))

    def factory(**kw: Any) -> TextEnv:
        return cls(**{**env_kwargs, **kw})

    store = SessionStore(factory, config)
    catalog: dict[str, Any] = {}
    catalog_lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        async def reaper() -> None:
            while True:
                await asyncio.sleep(max(0.05, min(60.0, config.idle_timeout_s / 4)))
                await asyncio.to_thread(store.reap)

        task = asyncio.create_task(reaper())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.to_thread(store.close_all)
            if "env" in catalog:
                catalog["env"].close()

    app = FastAPI(title=f"eef env server: {env_label}", lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, e: _ApiError):
        return JSONResponse({"error": e.code, "detail": e.detail}, status_code=e.status)

    @app.exception_handler(EnvError)
    async def _env_error(request: Request, e: EnvError):
        if isinstance(e, UnknownTaskError):
            status, code = 404, "unknown_task"
        elif isinstance(e, EpisodeNotStartedError):
            status, code = 409, "episode_not_started"
        elif isinstance(e, EnvDiedError):
            status, code = 503, "env_died"
        else:
            status, code = 400, "env_error"
        return JSONResponse({"error": code, "detail": str(e)}, status_code=status)

    def catalog_env() -> TextEnv:
        with catalog_lock:
            if "env" not in catalog:
                catalog["env"] = factory()
            return catalog["env"]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"env": env_label, "sessions": len(store.sessions),
                "max_sessions": config.max_sessions, "created": store.created,
                "reaped": store.reaped}

    @app.get("/tasks")
    def tasks(split: str = "all") -> list[dict[str, Any]]:
        key = f"tasks:{split}"
        if key not in catalog:
            try:
                ts = catalog_env().tasks(split)  # type: ignore[arg-type]
            except (KeyError, ValueError) as e:
                raise _ApiError(400, "bad_split", f"bad split {split!r}: {e}")
            catalog[key] = [dataclasses.asdict(t) for t in ts]
        return catalog[key]

    @app.get("/task")
    def task(task_id: str) -> dict[str, Any]:
        return dataclasses.asdict(catalog_env().task(task_id))

    @app.post("/sessions")
    def create(body: CreateBody | None = None) -> dict[str, Any]:
        kw = body.kwargs if body is not None else {}
        if kw and not config.allow_client_kwargs:
            raise _ApiError(403, "kwargs_not_allowed",
                            "this server does not accept env kwargs from clients")
        sid, e = store.create(kw)
        return {"session": sid, "name": e.name, "base_name": getattr(e, "base_name", e.name),
                "max_steps": e.max_steps, "restarts_step_limit": bool(e.restarts_step_limit)}

    @app.post("/sessions/{sid}/reset")
    def reset(sid: str, body: ResetBody) -> dict[str, Any]:
        with store.use(sid) as e:
            return {"observation": e.reset(body.task_id)}

    @app.post("/sessions/{sid}/step")
    def step(sid: str, body: StepBody) -> dict[str, Any]:
        with store.use(sid) as e:
            return dataclasses.asdict(e.step(body.action))

    @app.get("/sessions/{sid}/available_actions")
    def available_actions(sid: str) -> dict[str, Any]:
        with store.use(sid) as e:
            return {"actions": list(e.available_actions())}

    @app.post("/sessions/{sid}/replay")
    def replay(sid: str, body: ReplayBody) -> dict[str, Any]:
        if body.expected is not None and len(body.expected) != len(body.actions):
            raise _ApiError(422, "bad_replay", "expected must have one observation per action")
        with store.use(sid) as e:
            return dataclasses.asdict(e.replay(body.task_id, body.actions, body.expected))

    @app.post("/sessions/{sid}/restart_step_limit")
    def restart_step_limit(sid: str) -> dict[str, Any]:
        with store.use(sid) as e:
            e.restart_step_limit()
            return {}

    @app.delete("/sessions/{sid}")
    def close(sid: str) -> dict[str, Any]:
        if not store.close(sid):
            raise _ApiError(404, "unknown_session", f"unknown session {sid!r}")
        return {"closed": sid}

    return _BodyLimit(app, config.max_body_bytes) if config.max_body_bytes else app


def serve_env(env_name: str, host: str = "127.0.0.1", port: int = 8000,
              config: ServerConfig | None = None, **env_kwargs: Any) -> None:
    """Serve ``env_name`` over HTTP until interrupted (``eef env serve ENV --port P``)."""
    import uvicorn
    config = dataclasses.replace(config or ServerConfig(), host=host, port=port)
    uvicorn.run(create_app(env_name, config, **env_kwargs), host=config.host, port=config.port,
                log_level="warning", timeout_keep_alive=30)


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks): ``with
    ServerThread(app) as url: ...``.  ``port=0`` picks a free port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="on"))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.host = host

    def __enter__(self) -> str:
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 30:
                raise RuntimeError("env server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
