"""The positive repository D+: the agent's successful trajectories that RFT, RFT×N and EEF
add to the expert's successes, kept per key by ``method.rft_keep``."""

from __future__ import annotations

from typing import Any

from eef.algorithms.config import KEEP_RULES
from eef.trajectory import Trajectory


class PositiveRepository:
    """The agent's successful trajectories by key (a task's s_0, an EEF important state), kept
    by ``keep`` (``method.rft_keep``): ``shortest`` one per key (highest reward, then fewest
    steps); ``distinct`` every success whose action sequence differs from those kept under its
    key; ``all`` every success (repeats included)."""

    def __init__(self, keep: str = "distinct") -> None:
        if keep not in KEEP_RULES:
            raise ValueError(f"keep rule {keep!r} is not one of {', '.join(KEEP_RULES)}")
        self.keep = keep
        self.items: dict[Any, list[Trajectory]] = {}

    def offer(self, key: Any, t: Trajectory) -> bool:
        """Add ``t`` under ``key`` if it succeeded and the keep rule takes it."""
        if not t.success:
            return False
        kept = self.items.setdefault(key, [])
        if self.keep == "shortest":
            if kept and (-t.reward, len(t)) >= (-kept[0].reward, len(kept[0])):
                return False
            kept[:] = [t]
            return True
        if self.keep == "distinct" and any(k.actions == t.actions for k in kept):
            return False
        kept.append(t)
        return True

    def __len__(self) -> int:
        return sum(map(len, self.items.values()))

    def trajectories(self) -> list[Trajectory]:
        return [t for k in sorted(self.items, key=str) for t in self.items[k]]
