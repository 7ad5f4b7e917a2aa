"""What rollouts cost: the one ``Budget`` of the engine (per request) and of the methods (per
stage, iteration and run: the ``METHOD/itI/budget`` rows of ``metrics.jsonl``, ``eef compare``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable

from eef.trajectory import Trajectory

#: the token counts of a budget (None in the engine's budget: the policy does not report them)
TOKEN_KEYS = ("generated_tokens", "prompt_tokens", "prefill_tokens")
#: what a method's budget rows count (docs/pipeline.md, "Budget accounting")
BUDGET_KEYS = ("episodes", "env_steps", "replay_steps") + TOKEN_KEYS


@dataclass
class Budget:
    """Counted cost of rollouts.

    ``Budget.of(trajectories)`` is the methods' accounting (docs/pipeline.md): per episode, the
    policy's env steps (``env_steps``: its steps after state k) and the k replayed expert steps
    (``replay_steps``), with the token counts of ``meta`` (unreported ones count 0).  The
    engine's per-request budget (``RolloutResult.budgets``) counts the work it did instead:
    every env step (replays and retried attempts included) and the replay steps it actually
    ran (none for a state restored from a snapshot), tokens None when the policy does not
    report them, and ``wall_s``."""

    episodes: int = field(default=0, metadata={"help": "Episodes finished or failed."})
    env_steps: int = field(default=0, metadata={"help": "Env steps (see the class)."})
    replay_steps: int = field(default=0, metadata={"help": "Replayed recorded steps."})
    generated_tokens: int | None = field(default=0, metadata={
        "help": "Tokens the policy generated (None: the policy does not report them)."})
    prompt_tokens: int | None = field(default=0, metadata={
        "help": "Prompt tokens of every turn, before prefix reuse (None: not reported)."})
    prefill_tokens: int | None = field(default=0, metadata={
        "help": "Prompt tokens the model computed, after prefix reuse (None: not reported)."})
    wall_s: float = field(default=0.0, metadata={
        "help": "Engine: seconds from the request's first episode start to its last end."})

    @classmethod
    def of(cls, trajs: Iterable[Trajectory]) -> "Budget":
        """The methods' accounting of finished trajectories (see the class)."""
        b = cls()
        for t in trajs:
            k = int(t.source.start_state or 0)
            b.episodes += 1
            b.env_steps += max(0, len(t) - k)
            b.replay_steps += k
            for f in TOKEN_KEYS:
                setattr(b, f, getattr(b, f) + int(t.meta.get(f) or 0))
        return b

    @property
    def tokens(self) -> int:
        """The tokens the model computed: generated + prompt tokens after prefix reuse."""
        return (self.generated_tokens or 0) + (self.prefill_tokens or 0)

    def counts(self) -> dict[str, int]:
        """The ``BUDGET_KEYS`` counts, as the metrics rows hold them (unreported tokens: 0)."""
        return {k: int(getattr(self, k) or 0) for k in BUDGET_KEYS}

    def __add__(self, o: "Budget") -> "Budget":
        return Budget(**{f.name: add_count(getattr(self, f.name), getattr(o, f.name))
                         for f in dataclasses.fields(self)})


def add_count(total: int | float | None, n: int | float | None) -> int | float | None:
    """A count plus one more; None (unknown) when either is."""
    return None if total is None or n is None else total + n
