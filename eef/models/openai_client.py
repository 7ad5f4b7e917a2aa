"""``openai:<model>@<base_url>``: any OpenAI-compatible chat endpoint as an eef policy.

Works with the OpenAI API, vLLM, llama.cpp's server and ``eef serve``.  Spec: ``openai:MODEL``
(base URL from ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``) or
``openai:MODEL@BASE_URL``; a base URL without a path gets ``/v1``.  The API key is read from the
env var named by ``api_key_env`` (``OPENAI_API_KEY``); local servers need none.

Each context becomes the chat of ``eef.models.format.trajectory_messages`` (optional system
text first); the response is cut after its first complete ``Action:`` line.  Requests run
``concurrency`` at a time, at most ``rate_limit`` per second; connection errors, timeouts, 429 and
5xx are retried ``max_retries`` times with exponential backoff (``Retry-After`` honoured), then
``EndpointError`` is raised.  Other 4xx answers raise ``EndpointError`` at once.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlparse

from eef.errors import EndpointError
from eef.models.format import cut_after_action, trajectory_messages
from eef.policy import PolicySpecError, Sampling

if TYPE_CHECKING:
    from eef.envs.base import TextEnv
    from eef.trajectory import Trajectory

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def parse_spec(rest: str) -> tuple[str, str]:
    """``(model, base_url)`` of ``MODEL[@BASE_URL]``."""
    model, sep, url = rest.partition("@")
    if not model:
        raise PolicySpecError(f"openai:{rest}: expected openai:MODEL@BASE_URL")
    url = url if sep else os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL)
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise PolicySpecError(f"openai:{rest}: base URL {url!r} is not an http(s) URL")
    url = url.rstrip("/")
    if not u.path.strip("/"):
        url += "/v1"
    return model, url


class _RateLimiter:
    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            t = max(now, self.next)
            self.next = t + self.interval
        if t > now:
            time.sleep(t - now)


class OpenAIPolicy:
    """A chat-completions endpoint behind the ``Policy`` protocol."""

    def __init__(self, model: str, base_url: str = DEFAULT_BASE_URL, *,
                 api_key_env: str = "OPENAI_API_KEY", system: str | None = None,
                 timeout: float = 60.0, max_retries: int = 4, backoff: float = 1.0,
                 rate_limit: float | None = None, concurrency: int = 8,
                 stop_after_action: bool = True, spec: str | None = None):
        import httpx
        self.model, self.base_url, self.system = model, base_url.rstrip("/"), system
        self.spec = spec or f"openai:{model}@{self.base_url}"
        self.max_retries, self.backoff = max_retries, backoff
        self.stop_after_action = stop_after_action
        self.concurrency = max(1, concurrency)
        self.limiter = _RateLimiter(rate_limit)
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers,
                                   limits=httpx.Limits(max_connections=self.concurrency))
        self.requests = 0  # HTTP requests sent, retries included

    def close(self) -> None:
        self.client.close()

    # -- the Policy protocol ----------------------------------------------------------------
    def act(self, contexts: Sequence["Trajectory"], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        chats = [trajectory_messages(c, self.system) for c in contexts]
        return self.chat(chats, sampling, seeds)

    def chat(self, chats: Sequence[Sequence[dict[str, str]]], sampling: Sampling | None = None,
             seeds: Sequence[int] | None = None) -> list[str]:
        s = sampling or Sampling()
        if seeds is not None and len(seeds) != len(chats):
            raise ValueError(f"{len(seeds)} seeds for {len(chats)} contexts")
        jobs = [(list(c), s, None if seeds is None else int(seeds[i]))
                for i, c in enumerate(chats)]
        if len(jobs) == 1:
            return [self._one(*jobs[0])]
        with ThreadPoolExecutor(self.concurrency) as ex:
            return list(ex.map(lambda j: self._one(*j), jobs))

    def _one(self, messages: list[dict[str, str]], s: Sampling, seed: int | None) -> str:
        payload: dict[str, Any] = {"model": self.model, "messages": messages,
                                   "temperature": s.temperature, "top_p": s.top_p,
                                   "max_tokens": s.max_new_tokens}
        if seed is not None:
            payload["seed"] = seed
        data = self._post(payload)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(f"{self.base_url}: malformed chat completion: {str(data)[:200]}"
                                ) from e
        if self.stop_after_action:
            text = cut_after_action(text)[0]
        return text.strip()

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx
        url = f"{self.base_url}/chat/completions"
        last, last_retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._delay(attempt, last_retry_after))
            last_retry_after = None
            self.limiter.wait()
            self.requests += 1
            try:
                r = self.client.post(url, json=payload)
            except httpx.TransportError as e:  # connection refused, DNS, timeouts
                last = f"{type(e).__name__}: {e}"
                continue
            if r.status_code == 200:
                try:
                    return r.json()
                except ValueError:
                    raise EndpointError(f"{url}: answer is not JSON: {r.text[:200]}") from None
            last = f"HTTP {r.status_code}: {r.text[:300]}"
            if r.status_code not in _RETRY_STATUS:
                hint = " (set the API key env var)" if r.status_code in (401, 403) else ""
                raise EndpointError(f"{url}: {last}{hint}")
            last_retry_after = r.headers.get("retry-after")
        raise EndpointError(f"{url}: unreachable or failing after {self.max_retries + 1} "
                            f"attempts; last error: {last}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(60.0, float(retry_after))
            except ValueError:
                pass
        return min(30.0, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


def load_openai_policy(rest: str, env: "TextEnv | None" = None, **kw: Any) -> OpenAIPolicy:
    """The policy of spec ``openai:<rest>``; keywords go to ``OpenAIPolicy``."""
    model, url = parse_spec(rest)
    return OpenAIPolicy(model, url, spec=f"openai:{rest}", **kw)
