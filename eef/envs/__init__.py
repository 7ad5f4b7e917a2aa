"""Environment registry: ``eef.envs.make("webshop", ...)``.

Entries are lazy (``module:Class``) so that importing eef does not import every simulator.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from eef.envs.base import (EnvDiedError, EnvError, ReplayResult, StepResult, Task, TextEnv,
                           UnknownTaskError, task_family)

_REGISTRY: dict[str, str | Callable[..., TextEnv]] = {
    "webshop": "eef.envs.webshop:WebShopEnv",
    "sciworld": "eef.envs.sciworld:SciWorldEnv",
    "http": "eef.envs.http:HttpEnv",
}


def register(name: str, entry: str | Callable[..., TextEnv]) -> None:
    """Register an env factory (a callable or a ``"module:attr"`` string)."""
    _REGISTRY[name] = entry


def names() -> list[str]:
    return sorted(_REGISTRY)


def env_class(name: str) -> Callable[..., TextEnv]:
    if name not in _REGISTRY:
        raise KeyError(f"unknown env {name!r}; known envs: {', '.join(names())}")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        mod, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(mod), attr)
    return entry


def make(name: str, **kwargs: Any) -> TextEnv:
    """Create an env by name; ``kwargs`` go to its constructor."""
    return env_class(name)(**kwargs)


__all__ = ["make", "register", "names", "env_class", "TextEnv", "Task", "StepResult",
           "ReplayResult", "EnvError", "EnvDiedError", "UnknownTaskError", "task_family"]
