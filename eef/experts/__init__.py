"""Scripted experts, by env: ``make_expert(env, "heuristic")``.

Every expert implements ``eef.policy.Policy``: it maps partial trajectories to
``Thought: ...\\nAction: ...`` turns, deterministically given (task, history, seed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eef.policy import PolicySpecError

if TYPE_CHECKING:
    from eef.envs.base import TextEnv
    from eef.policy import Policy

_EXPERTS: dict[tuple[str, str], str] = {
    ("webshop", "oracle"): "eef.experts.webshop:OracleExpert",
    ("webshop", "heuristic"): "eef.experts.webshop:HeuristicExpert",
    ("webshop", "noisy"): "eef.experts.webshop:NoisyExpert",
    ("webshop", "random"): "eef.experts.webshop:RandomExpert",
    ("sciworld", "gold"): "eef.experts.sciworld:GoldExpert",
    ("sciworld", "noisy"): "eef.experts.sciworld:NoisyExpert",
    ("sciworld", "random"): "eef.experts.sciworld:RandomExpert",
    ("webshop", "llm"): "eef.experts.llm:LLMExpert",
    ("sciworld", "llm"): "eef.experts.llm:LLMExpert",
}


def register_expert(env_name: str, name: str, entry: str) -> None:
    _EXPERTS[(env_name, name)] = entry


def expert_names(env_name: str) -> list[str]:
    return sorted(n for e, n in _EXPERTS if e == env_name)


def make_expert(env: "TextEnv", name: str, **kwargs: Any) -> "Policy":
    env_name = getattr(env, "base_name", env.name)
    key = (env_name, name)
    if key not in _EXPERTS:
        raise PolicySpecError(f"unknown expert {name!r} for env {env_name!r}; "
                              f"known: {', '.join(expert_names(env_name)) or 'none'}")
    mod, _, attr = _EXPERTS[key].partition(":")
    return getattr(importlib.import_module(mod), attr)(env, **kwargs)


def expert_policy(name: str, env: "TextEnv | None" = None, **kwargs: Any) -> "Policy":
    """The factory of ``expert:NAME`` policy specs (``eef.policy.load_policy``)."""
    if env is None:
        raise PolicySpecError(f"expert:{name}: a scripted expert needs the env")
    return make_expert(env, name, **kwargs)
