"""Scripted experts, by env: ``make_expert(env, "heuristic")``.

Every expert implements ``eef.policy.Policy``: it maps partial trajectories to
``Thought: ...\\nAction: ...`` turns, deterministically given (task, history, seed).

A spec may set an expert's parameters: ``expert:NAME(KEY=VALUE, ...)``, e.g.
``expert:noisy(slip=0.5)`` or ``expert:late(option_error=0.2, dawdle=0.5)``; values are Python
literals (numbers, booleans, quoted strings) or bare words (strings).  The expert's ``spec`` is
then the canonical form of the string (keys sorted), which recreates it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
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
    ("webshop", "late"): "eef.experts.webshop:LateExpert",
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


_SPEC = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


def parse_expert_spec(rest: str) -> tuple[str, dict[str, Any]]:
    """``NAME`` or ``NAME(KEY=VALUE, ...)`` (the part after ``expert:``) -> (name, params)."""
    m = _SPEC.match(rest)
    if not m:
        raise PolicySpecError(f"bad expert spec 'expert:{rest}': expected expert:NAME or "
                              f"expert:NAME(KEY=VALUE, ...)")
    params: dict[str, Any] = {}
    for item in filter(str.strip, (m.group(2) or "").split(",")):
        k, eq, v = (x.strip() for x in item.partition("="))
        if not eq or not k.isidentifier() or not v:
            raise PolicySpecError(f"bad parameter {item.strip()!r} in 'expert:{rest}': "
                                  f"expected KEY=VALUE")
        if k in params:
            raise PolicySpecError(f"parameter {k!r} given twice in 'expert:{rest}'")
        try:
            params[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            params[k] = v
    return m.group(1), params


def _parameters(cls: type) -> set[str]:
    """The keyword parameters the constructors of ``cls`` and its bases name (the env aside)."""
    return {p.name for c in cls.__mro__ if "__init__" in vars(c)
            for p in inspect.signature(vars(c)["__init__"]).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self", "env"}


def expert_policy(name: str, env: "TextEnv | None" = None, **kwargs: Any) -> "Policy":
    """The factory of ``expert:NAME`` and ``expert:NAME(KEY=VALUE, ...)`` policy specs
    (``eef.policy.load_policy``)."""
    if env is None:
        raise PolicySpecError(f"expert:{name}: a scripted expert needs the env")
    base, params = parse_expert_spec(name)
    if not params:
        return make_expert(env, base, **kwargs)
    env_name = getattr(env, "base_name", env.name)
    entry = _EXPERTS.get((env_name, base))
    if entry is not None:
        mod, _, attr = entry.partition(":")
        known = _parameters(getattr(importlib.import_module(mod), attr))
        unknown = sorted(set(params) - known)
        if unknown:
            raise PolicySpecError(f"expert:{base} has no parameter {', '.join(unknown)}; "
                                  f"known: {', '.join(sorted(known)) or 'none'}")
    try:
        pol = make_expert(env, base, **{**kwargs, **params})
    except ValueError as e:
        raise PolicySpecError(f"expert:{name}: {e}") from e
    pol.spec = f"expert:{base}(" + ", ".join(f"{k}={params[k]!r}" for k in sorted(params)) + ")"
    return pol
