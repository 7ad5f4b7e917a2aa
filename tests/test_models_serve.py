"""``eef serve`` (OpenAI-compatible server) and the ``openai:`` backend, for real over loopback."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from eef.errors import EndpointError
from eef.models.openai_client import OpenAIPolicy, parse_spec
from eef.models.serve import ServeConfig, create_app
from eef.policy import PolicySpecError, Sampling, load_policy
from test_models_hf import fixed_task, trained_dir, model_dir  # noqa: F401  (fixtures)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_dir):  # noqa: F811
    import uvicorn
    policy = load_policy(f"hf:{trained_dir}")
    port = _free_port()
    app = create_app(policy, ServeConfig(port=port, max_body_bytes=20_000, max_wait_ms=50,
                                         model_name="agent"))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started
    yield {"url": f"http://127.0.0.1:{port}", "app": app, "policy": policy}
    srv.should_exit = True
    th.join(timeout=10)


@pytest.mark.slow
def test_openai_backend_against_eef_serve_32_concurrent(server):
    pol = load_policy(f"openai:agent@{server['url']}", concurrency=32)
    ctx = fixed_task(32)
    contexts = [t.prefix(i % 2) for i, t in enumerate(ctx)]
    t0 = len(server["app"].state.batcher.batches)
    out = pol.act(contexts, Sampling(max_new_tokens=40))
    # the preset tokenizer reads text lower-cased, so its model writes lower case
    want = ["thought: i search\naction: search[shoes]", "action: click[buy now]"]
    assert out == [want[i % 2] for i in range(32)]
    assert out == server["policy"].act(contexts, Sampling(max_new_tokens=40))
    sizes = server["app"].state.batcher.batches[t0:]
    assert sum(sizes) == 32 and max(sizes) > 1  # concurrent requests were batched
    assert pol.requests == 32


@pytest.mark.slow
def test_chat_completion_response_shape(server):
    r = httpx.post(f"{server['url']}/v1/chat/completions", json={
        "model": "agent", "messages": [{"role": "user", "content": "Instruction: [SEP] x"}],
        "temperature": 0, "max_tokens": 5})
    assert r.status_code == 200
    d = r.json()
    assert d["object"] == "chat.completion" and d["model"] == "agent"
    assert d["choices"][0]["message"]["role"] == "assistant"
    assert d["choices"][0]["finish_reason"] in ("stop", "length")
    assert 0 < d["usage"]["completion_tokens"] <= 5
    assert httpx.get(f"{server['url']}/v1/models").json()["data"][0]["id"] == "agent"


@pytest.mark.parametrize("body,status,msg", [
    ({"messages": [{"role": "user", "content": "x" * 30_000}]}, 413, "over"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "bad request"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True, "n": 2}, 400, "n=1"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n=1"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}, 400, "max_tokens"),
])
@pytest.mark.slow
def test_bad_requests_get_clear_errors(server, body, status, msg):
    r = httpx.post(f"{server['url']}/v1/chat/completions", json=body)
    assert r.status_code == status and msg in r.json()["error"]["message"]


def _events(text: str) -> list[str]:
    """The data of each server-sent event of a response body."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks
    return [b[len("data: "):] for b in blocks]


@pytest.mark.slow
def test_stream_sends_chat_completion_chunks_then_done(server):
    body = {"model": "agent", "messages": [{"role": "user", "content": "Instruction: [SEP] x"}],
            "temperature": 0, "max_tokens": 8}
    whole = httpx.post(f"{server['url']}/v1/chat/completions", json=body).json()
    r = httpx.post(f"{server['url']}/v1/chat/completions",
                   json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["model"] == "agent"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[:-1] == [None] * (len(finish) - 1)
    assert finish[-1] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    plain = httpx.post(f"{server['url']}/v1/chat/completions", json={**body, "stream": True})
    assert all("usage" not in json.loads(e) for e in _events(plain.text)[:-1])


@pytest.mark.slow
def test_official_openai_client_streams(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server['url']}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Instruction: [SEP] x"}]
    whole = client.chat.completions.create(model="agent", messages=messages, temperature=0,
                                           max_tokens=8)
    stream = client.chat.completions.create(model="agent", messages=messages, temperature=0,
                                            max_tokens=8, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_unreachable_endpoint_raises_endpoint_error():
    pol = OpenAIPolicy("m", f"http://127.0.0.1:{_free_port()}/v1", max_retries=1, backoff=0.01,
                       timeout=2)
    with pytest.raises(EndpointError, match="after 2 attempts"):
        pol.chat([[{"role": "user", "content": "x"}]])
    assert pol.requests == 2


def test_retries_429_and_5xx_then_succeeds(monkeypatch):
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        if len(calls) == 1:
            return httpx.Response(429, headers={"retry-after": "0"}, text="slow down")
        if len(calls) == 2:
            return httpx.Response(503, text="busy")
        return httpx.Response(200, json={"choices": [{"message": {
            "content": "Thought: t\nAction: search[x]\nAction: click[y]"}}]})
    monkeypatch.setenv("MY_KEY", "sekrit")
    pol = OpenAIPolicy("m", "http://example.invalid/v1", api_key_env="MY_KEY", backoff=0.01)
    pol.client = httpx.Client(transport=httpx.MockTransport(handler),
                              headers=dict(pol.client.headers))
    assert pol.chat([[{"role": "user", "content": "x"}]], seeds=[7]) == [
        "Thought: t\nAction: search[x]"]
    assert len(calls) == 3 and calls[-1].headers["authorization"] == "Bearer sekrit"
    import json
    assert json.loads(calls[-1].content)["seed"] == 7


def test_client_errors_are_not_retried():
    calls = []

    def handler(req):
        calls.append(req)
        return httpx.Response(401, text="bad key")
    pol = OpenAIPolicy("m", "http://example.invalid/v1", backoff=0.01)
    pol.client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(EndpointError, match="API key"):
        pol.chat([[{"role": "user", "content": "x"}]])
    assert len(calls) == 1


def test_rate_limit():
    def handler(req):
        return httpx.Response(200, json={"choices": [{"message": {"content": "Action: a"}}]})
    pol = OpenAIPolicy("m", "http://example.invalid/v1", rate_limit=20, concurrency=5)
    pol.client = httpx.Client(transport=httpx.MockTransport(handler))
    t0 = time.monotonic()
    pol.chat([[{"role": "user", "content": "x"}]] * 6)
    assert time.monotonic() - t0 >= 0.24  # 6 requests at 20/s: 5 intervals of 50 ms


def test_spec_parsing(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert parse_spec("gpt-4") == ("gpt-4", "https://api.openai.com/v1")
    assert parse_spec("m@http://127.0.0.1:8000") == ("m", "http://127.0.0.1:8000/v1")
    assert parse_spec("m@http://h:1/api/v1/") == ("m", "http://h:1/api/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://local:9/v1")
    assert parse_spec("m")[1] == "http://local:9/v1"
    for bad in ("@http://h", "m@ftp://h", "m@nohost"):
        with pytest.raises(PolicySpecError):
            parse_spec(bad)


@pytest.mark.slow
def test_llm_expert_through_openai_backend(server):
    from eef.experts import make_expert
    import eef.experts.llm as llm

    class Env:
        name = "webshop"
    pol = make_expert(Env(), "llm", policy=f"openai:agent@{server['url']}")
    assert pol.spec == f"expert:llm(openai:agent@{server['url']})"
    assert pol.system == llm.SYSTEM_PROMPTS["webshop"] and pol.inner.system == pol.system
    ctx = fixed_task(1)[0].prefix(0)
    out = pol.act([ctx], Sampling(max_new_tokens=40))
    # the expert's turn is the served model's answer to the trajectory behind the system prompt
    from eef.models.format import cut_after_action, trajectory_messages
    msgs = trajectory_messages(ctx, llm.SYSTEM_PROMPTS["webshop"])
    assert msgs[0] == {"role": "system", "content": llm.SYSTEM_PROMPTS["webshop"]}
    r = httpx.post(f"{server['url']}/v1/chat/completions", json={
        "model": "agent", "messages": msgs, "temperature": 0.0, "max_tokens": 40})
    assert out == [cut_after_action(r.json()["choices"][0]["message"]["content"])[0].strip()]
    with pytest.raises(PolicySpecError, match="needs a model"):
        make_expert(Env(), "llm")
    with pytest.raises(PolicySpecError, match="wraps a model"):
        make_expert(Env(), "llm", policy="expert:oracle")
