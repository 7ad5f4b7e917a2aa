"""The agent policy of a trained model directory, as the stages run it: loaded in-process, or
(``model.serve_url``) the model registered with an OpenAI-compatible server, on several
servers as policy replicas (``model.serve_urls``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eef.algorithms.context import Context


def policy_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else unchanged."""
    if device == "auto":
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_model_policy(ctx: Context, model: Path):
    """The policy of the model at ``model``: loaded in-process, or (``model.serve_url``) the
    served base model / the LoRA adapter registered with the server.  ``release`` it."""
    m, r = ctx.cfg.model, ctx.cfg.rollout
    if m.serve_url:
        from functools import partial

        from eef.models.served import release, served_policy
        kw = dict(base_dir=ctx.base, base_name=m.serve_model,
                  api_key_env=m.serve_api_key_env, system=m.system,
                  concurrency=max(1, r.num_envs))
        if not m.serve_urls:
            return served_policy(m.serve_url, model, **kw)
        from eef.rollout.replicas import ReplicatedPolicy
        return ReplicatedPolicy([partial(served_policy, u, model, **kw)
                                 for u in [m.serve_url, *m.serve_urls]],
                                "ray" if r.backend == "ray" else "local",
                                ray_address=r.ray_address, release_fn=release)
    from eef.policy import load_policy
    return load_policy(f"hf:{model}", ctx.env, system=m.system, device=policy_device(m.device),
                       trim_block=m.trim_block, prefix_cache_mb=m.prefix_cache_mb,
                       max_context=m.max_context, dtype=m.dtype)


def release_policy(policy: Any) -> None:
    """Free a policy of ``load_model_policy`` (unloads a served adapter)."""
    from eef.models.served import release
    release(policy)
