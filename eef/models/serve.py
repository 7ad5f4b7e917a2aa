"""An OpenAI-compatible ``/v1/chat/completions`` server for any ``hf:`` model.

``serve("hf:DIR", port=8000)`` (CLI: ``eef serve hf:DIR --port 8000``) binds 127.0.0.1 unless
``host`` says otherwise.  Concurrent requests are batched: a worker thread takes every request
that arrived within ``max_wait_ms`` of the first (up to ``max_batch``) and decodes them together
(requests with the same sampling parameters share one batch).  Bounds: request bodies over
``max_body_bytes`` get 413, more than ``max_messages`` messages or ``max_tokens`` above
``max_new_tokens`` get 400; prompts longer than the model's context are cut by the documented
policy of ``eef.models.format``.  Supported fields: ``model``, ``messages``, ``temperature``,
``top_p``, ``max_tokens`` / ``max_completion_tokens``, ``seed``, ``stop``, ``n`` (1 only),
``stream`` and ``stream_options.include_usage``.  A streamed answer is server-sent events in
the ``chat.completion.chunk`` format ending with ``data: [DONE]``; the completion is decoded
in its batch first, so its text comes as one content chunk (errors keep their status codes).

LoRA adapters, with vLLM's endpoints (so a client that drives a vLLM server drives this one):
``POST /v1/load_lora_adapter {"lora_name": NAME, "lora_path": DIR}`` loads the peft adapter in
``DIR`` on top of the served base model, ``POST /v1/unload_lora_adapter {"lora_name": NAME}``
drops it, and a chat request whose ``model`` is ``NAME`` is answered by it (requests are batched
per adapter; any other ``model`` value is answered by the base model).  At most ``max_adapters`` are loaded at once; loading a name again with the same
path is a no-op.
"""

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from eef.policy import Sampling


@dataclass
class ServeConfig:
    """Server limits and batching."""

    host: str = field(default="127.0.0.1", metadata={"help": "interface to bind (0.0.0.0: all)"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    max_batch: int = field(default=64, metadata={"help": "requests decoded together at most"})
    max_wait_ms: float = field(default=10.0, metadata={
        "help": "how long the first request of a batch waits for others"})
    max_body_bytes: int = field(default=2_000_000, metadata={"help": "largest request body"})
    max_messages: int = field(default=1024, metadata={"help": "most messages per request"})
    max_new_tokens: int = field(default=1024, metadata={"help": "largest max_tokens accepted"})
    model_name: str | None = field(default=None, metadata={
        "help": "model id reported to clients (default: the spec)"})
    max_adapters: int = field(default=4, metadata={
        "help": "LoRA adapters loaded at once at most (each holds its own copy of the model "
                "on this server; 0: no adapter endpoints)"})


class _Job:
    __slots__ = ("messages", "sampling", "seed", "stop", "future")

    def __init__(self, messages, sampling, seed, stop):
        self.messages, self.sampling, self.seed, self.stop = messages, sampling, seed, stop
        self.future: Future = Future()


class Batcher:
    """Collects concurrent requests and runs them through ``policy.complete`` in batches."""

    def __init__(self, policy: Any, max_batch: int = 64, max_wait_ms: float = 10.0):
        self.policy, self.max_batch, self.max_wait = policy, max_batch, max_wait_ms / 1000
        self.q: queue.Queue[_Job | None] = queue.Queue()
        self.batches: list[int] = []  # sizes of the batches run (observability, tests)
        self.thread = threading.Thread(target=self._run, name="eef-serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, messages, sampling: Sampling, seed: int | None, stop: tuple) -> Future:
        job = _Job(messages, sampling, seed, stop)
        self.q.put(job)
        return job.future

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            jobs = [job]
            deadline = time.monotonic() + self.max_wait
            while len(jobs) < self.max_batch:
                try:
                    nxt = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                jobs.append(nxt)
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                groups.setdefault((j.sampling, j.stop, j.seed is None), []).append(j)
            for (sampling, stop, no_seed), g in groups.items():
                self.batches.append(len(g))
                try:
                    out = self.policy.complete(
                        [j.messages for j in g], sampling,
                        None if no_seed else [int(j.seed) for j in g], stop=stop)
                except Exception as e:  # answer every request of the batch
                    for j in g:
                        j.future.set_exception(e)
                    continue
                for j, c in zip(g, out):
                    j.future.set_result(c)


def create_app(policy: Any, cfg: ServeConfig | None = None, loader: Any = None) -> Any:
    """The FastAPI app serving ``policy`` (an ``HFPolicy``).  ``loader(adapter_dir)`` returns
    the policy of a LoRA adapter directory (None: no adapter endpoints)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    cfg = cfg or ServeConfig()
    name = cfg.model_name or getattr(policy, "spec", "model")
    batcher = Batcher(policy, cfg.max_batch, cfg.max_wait_ms)
    adapters: dict[str, tuple[str, Batcher]] = {}  # name -> (path, batcher)
    adapter_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        batcher.close()
        for _, b in list(adapters.values()):
            b.close()

    app = FastAPI(title="eef model server", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.adapters = adapters
    app.state.adapter_loads = []  # names loaded, in order (observability, tests)
    app.state.chat_requests = 0  # chat completions answered

    def error(status: int, msg: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": msg, "type": kind}}, status_code=status)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "eef"}]
                + [{"id": a, "object": "model", "owned_by": "eef", "parent": name}
                   for a in adapters]}

    async def small_json(request: Request) -> Any:
        body = await request.body()
        if len(body) > 65536:
            raise ValueError("request body over 65536 bytes")
        import json
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: Request) -> Any:
        if loader is None or cfg.max_adapters < 1:
            return error(400, "this server loads no LoRA adapters")
        try:
            data = await small_json(request)
        except ValueError as e:
            return error(400, f"bad request: {e}")
        a, path = data.get("lora_name"), data.get("lora_path")
        if not isinstance(a, str) or not a or not isinstance(path, str) or not path:
            return error(400, "lora_name and lora_path (strings) are required")
        if a == name:
            return error(400, f"{a!r} is the base model's name")
        from pathlib import Path
        if not (Path(path) / "adapter_config.json").is_file():
            return error(400, f"{path}: not a LoRA adapter directory (no adapter_config.json)")
        async with adapter_lock:
            if a in adapters:
                if adapters[a][0] == path:
                    return {"status": "ok", "lora_name": a, "already_loaded": True}
                return error(400, f"adapter {a!r} is already loaded from {adapters[a][0]}; "
                                  "unload it first")
            if len(adapters) >= cfg.max_adapters:
                return error(400, f"{cfg.max_adapters} adapters are loaded (max_adapters); "
                                  "unload one first")
            try:
                pol = await asyncio.to_thread(loader, path)
            except Exception as e:
                return error(400, f"cannot load adapter {path}: {type(e).__name__}: {e}")
            adapters[a] = (path, Batcher(pol, cfg.max_batch, cfg.max_wait_ms))
            app.state.adapter_loads.append(a)
        return {"status": "ok", "lora_name": a}

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(request: Request) -> Any:
        try:
            data = await small_json(request)
        except ValueError as e:
            return error(400, f"bad request: {e}")
        a = data.get("lora_name")
        async with adapter_lock:
            if not isinstance(a, str) or a not in adapters:
                return error(404, f"no adapter named {a!r} is loaded", "not_found_error")
            _, b = adapters.pop(a)
        b.close()
        return {"status": "ok", "lora_name": a}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > cfg.max_body_bytes:
            return error(413, f"request body over {cfg.max_body_bytes} bytes")
        body = await request.body()
        if len(body) > cfg.max_body_bytes:
            return error(413, f"request body over {cfg.max_body_bytes} bytes")
        try:
            req = ChatRequest.model_validate_json(body)
        except Exception as e:
            return error(400, f"bad request: {e}")
        if req.n != 1:
            return error(400, "only n=1 is supported")
        if not req.messages or len(req.messages) > cfg.max_messages:
            return error(400, f"need 1..{cfg.max_messages} messages")
        max_new = req.max_completion_tokens or req.max_tokens or 256
        if not 1 <= max_new <= cfg.max_new_tokens:
            return error(400, f"max_tokens must be in 1..{cfg.max_new_tokens}")
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        sampling = Sampling(temperature=req.temperature, top_p=req.top_p, max_new_tokens=max_new)
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        # an adapter's name selects it; any other name is the base model
        which = adapters[req.model][1] if req.model in adapters else batcher
        fut = which.submit(msgs, sampling, req.seed, stop)
        try:
            c = await asyncio.wrap_future(fut)
        except ValueError as e:  # format errors: bad roles, template failures, budgets
            return error(400, str(e))
        except Exception as e:  # pragma: no cover - a model failure
            return error(500, f"{type(e).__name__}: {e}", "server_error")
        app.state.chat_requests += 1
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
                "model": req.model or name}
        usage = {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                 "total_tokens": c.prompt_tokens + c.completion_tokens}
        if req.stream:
            with_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(_sse_chunks(head, c.text, c.finish_reason,
                                                 usage if with_usage else None),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                             "finish_reason": c.finish_reason}],
                "usage": usage}

    return app


def _sse_chunks(head: dict[str, Any], text: str, finish_reason: str,
                usage: dict[str, int] | None) -> Any:
    """The server-sent events of a streamed completion: the role, the text, the finish reason
    (then the usage when asked for), each a ``chat.completion.chunk``, and ``[DONE]``."""
    import json

    def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        return {**head, "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **({"usage": None} if usage is not None else {})}

    events = [chunk({"role": "assistant", "content": ""})]
    if text:
        events.append(chunk({"content": text}))
    events.append(chunk({}, finish_reason))
    if usage is not None:
        events.append({**head, "object": "chat.completion.chunk", "choices": [],
                       "usage": usage})
    for e in events:
        yield f"data: {json.dumps(e)}\n\n"
    yield "data: [DONE]\n\n"


def _request_model() -> Any:
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    class Message(BaseModel):
        model_config = ConfigDict(extra="ignore")
        role: Literal["system", "user", "assistant"]
        content: str

    class StreamOptions(BaseModel):
        model_config = ConfigDict(extra="ignore")
        include_usage: bool = False

    class Request(BaseModel):
        model_config = ConfigDict(extra="ignore")
        model: str | None = None
        messages: list[Message]
        temperature: float = Field(default=1.0, ge=0.0, le=5.0)
        top_p: float = Field(default=1.0, gt=0.0, le=1.0)
        max_tokens: int | None = None
        max_completion_tokens: int | None = None
        seed: int | None = None
        stop: str | list[str] | None = None
        n: int = 1
        stream: bool = False
        stream_options: StreamOptions | None = None

    return Request


ChatRequest = _request_model()


def serve(model: str, cfg: ServeConfig | None = None, **policy_kw: Any) -> None:
    """Load ``model`` (a policy spec such as ``hf:DIR``) and serve it until interrupted."""
    import uvicorn

    from eef.policy import load_policy

    cfg = cfg or ServeConfig()
    policy = load_policy(model, **policy_kw)
    if not hasattr(policy, "complete"):
        raise ValueError(f"{model}: only hf: models can be served")
    def loader(path: str) -> Any:
        return load_policy(f"hf:{path}", **policy_kw)
    uvicorn.run(create_app(policy, cfg, loader), host=cfg.host, port=cfg.port,
                log_level="warning")
