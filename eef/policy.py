"""The policy protocol and policy specs.

A policy maps a batch of *contexts* to a batch of responses.  A context is a partial
``Trajectory`` (task, first observation, the steps so far); the response is the agent's turn
text (``Thought: ...\\nAction: ...``), parsed by ``eef.react.parse_turn``.  Scripted experts,
HF models and OpenAI-compatible endpoints all implement it, so every caller (evaluation, expert
collection, the rollout engine) treats them alike.

Policy specs (strings): ``expert:NAME`` (a scripted expert of the env: ``expert:oracle``,
``expert:heuristic``, ``expert:late``, ``expert:gold``, ``expert:noisy``, ``expert:random``;
parameters in parentheses, ``expert:noisy(slip=0.5)``: ``eef.experts``), ``hf:ID_OR_PATH``
and ``openai:MODEL@BASE_URL`` (model backends, see ``eef.models``).  Each scheme names its
factory by module path (``register_backend``), so this module, below the experts and the
models, imports neither.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

from eef.errors import PolicySpecError

if TYPE_CHECKING:
    from eef.envs.base import TextEnv
    from eef.trajectory import Trajectory

__all__ = ["Policy", "PolicySpecError", "Sampling", "load_policy", "register_backend"]


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters (ignored by deterministic scripted experts)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 96
    #: ban any n-gram of this many tokens from occurring twice within one line of a response
    #: (0: off); breaks the copy loops of small models ("slim fit slim fit slim fit ...")
    #: while a thought and an action may still quote the same words, each on its own line
    no_repeat_ngram: int = 0

    def record(self) -> dict[str, Any]:
        """The fields as recorded (provenance, stage keys): a field at its off value is left
        out, so records and keys made before it existed stay the same."""
        d = dataclasses.asdict(self)
        if not d["no_repeat_ngram"]:
            del d["no_repeat_ngram"]
        return d


@runtime_checkable
class Policy(Protocol):
    #: the spec string that recreates this policy (recorded as provenance)
    spec: str

    def act(self, contexts: Sequence["Trajectory"], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        """One response per context."""
        ...


#: policy factories by scheme; entries are ``module:factory(spec_rest, env=..., **kw)``
_BACKENDS: dict[str, str] = {
    "expert": "eef.experts:expert_policy",
    "hf": "eef.models.hf:load_hf_policy",
    "openai": "eef.models.openai_client:load_openai_policy",
}


def register_backend(scheme: str, entry: str) -> None:
    _BACKENDS[scheme] = entry


def load_policy(spec: str, env: "TextEnv | None" = None, **kwargs: Any) -> Policy:
    """Resolve a policy spec.  ``env`` is needed by scripted experts (they read task metadata)."""
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise PolicySpecError(
            f"bad policy spec {spec!r}: expected expert:NAME, hf:PATH or openai:MODEL@URL")
    if scheme not in _BACKENDS:
        raise PolicySpecError(
            f"bad policy spec {spec!r}: unknown scheme {scheme!r} (known: "
            + ", ".join(sorted(_BACKENDS)) + ")")
    mod, _, attr = _BACKENDS[scheme].partition(":")
    try:
        factory = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise PolicySpecError(f"{spec}: backend {scheme!r} is not available ({e})") from e
    return factory(rest, env=env, **kwargs)
