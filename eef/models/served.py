"""Policies served by an OpenAI-compatible server that loads LoRA adapters at run time.

This is how the pipeline runs rollouts on a vLLM server (the paper's setting: a Llama-3-8B base
model, LoRA fine-tuning, rollouts served by vLLM).  The server holds the base model; every
fine-tuned adapter is registered with ``POST {base_url}/load_lora_adapter`` (body
``{"lora_name": NAME, "lora_path": DIR}``) and used by naming it in the chat request's
``model`` field, then dropped with ``POST {base_url}/unload_lora_adapter``.  vLLM offers these
endpoints when started with ``--enable-lora`` and the environment variable
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (vLLM docs, "LoRA Adapters: dynamically serving LoRA
adapters"); ``eef serve`` offers the same ones.

An adapter's name is derived from the content of its directory (``eef-<checksum>``), so a
retrained adapter is never answered by a stale one.  ``DIR`` is sent as an absolute path: the
server must see the same file system (same machine, or a shared mount at the same path).
A full fine-tuned checkpoint cannot be swapped into a running server: ``ServedModelError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eef.errors import EndpointError, ModelError
from eef.models.openai_client import OpenAIPolicy


class ServedModelError(ModelError):
    """A model directory that a running server cannot serve (not the base, not an adapter)."""


def adapter_name(adapter_dir: str | os.PathLike) -> str:
    """``eef-<checksum of the adapter's config and weights>``."""
    import hashlib
    h = hashlib.sha256()
    root = Path(adapter_dir)
    for f in sorted(root.glob("adapter_*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return f"eef-{h.hexdigest()[:16]}"


def _admin(policy: OpenAIPolicy, endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
    import httpx
    try:
        r = policy.client.post(f"{policy.base_url}/{endpoint}", json=body)
    except httpx.TransportError as e:
        raise EndpointError(f"{policy.base_url}/{endpoint}: {type(e).__name__}: {e}") from e
    return r.status_code, r.text


def served_policy(base_url: str, model_dir: str | os.PathLike, *,
                  base_dir: str | os.PathLike | None = None, base_name: str | None = None,
                  api_key_env: str = "OPENAI_API_KEY", system: str | None = None,
                  **kw: Any) -> OpenAIPolicy:
    """An ``openai:`` policy answering as ``model_dir`` from the server at ``base_url``.

    ``model_dir`` is the base model (``base_dir``; served as ``base_name``, default the first
    model the server lists) or a LoRA adapter directory (registered under ``adapter_name``).
    Call ``release(policy)`` when done with it."""
    model_dir = Path(model_dir)
    probe = OpenAIPolicy("?", base_url, api_key_env=api_key_env, system=system, **kw)
    if (model_dir / "adapter_config.json").is_file():
        name = adapter_name(model_dir)
        status, text = _admin(probe, "load_lora_adapter",
                              {"lora_name": name, "lora_path": str(model_dir.resolve())})
        if status != 200 and "already" not in text.lower():
            probe.close()
            raise EndpointError(f"{base_url}: loading the LoRA adapter {model_dir} failed: "
                                f"HTTP {status}: {text[:300]} (is the server started with LoRA "
                                "enabled, and does it see this path?)")
        adapter = name
    elif base_dir is not None and model_dir.resolve() == Path(base_dir).resolve():
        name, adapter = base_name or _first_model(probe), None
    else:
        probe.close()
        raise ServedModelError(
            f"{model_dir} is neither the served base model nor a LoRA adapter: a server "
            "cannot swap in fully fine-tuned weights (train with LoRA, train.lora_r > 0, or "
            "run rollouts in-process: model.serve_url unset)")
    probe.model, probe.spec = name, f"openai:{name}@{probe.base_url}"
    probe.served_adapter = adapter  # type: ignore[attr-defined]
    return probe


def release(policy: Any) -> None:
    """Unload the adapter a ``served_policy`` registered (best effort) and close it."""
    name = getattr(policy, "served_adapter", None)
    if name:
        try:
            _admin(policy, "unload_lora_adapter", {"lora_name": name})
        except EndpointError:
            pass  # the server is gone: nothing to unload
    if hasattr(policy, "close"):
        policy.close()


def _first_model(policy: OpenAIPolicy) -> str:
    import httpx
    try:
        r = policy.client.get(f"{policy.base_url}/models")
        r.raise_for_status()
        return r.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
        raise EndpointError(f"{policy.base_url}/models: cannot read the served model's name "
                            f"({type(e).__name__}: {e}); set model.serve_model") from e
