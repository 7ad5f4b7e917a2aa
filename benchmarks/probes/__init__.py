"""Research probes of the tiny preset and the SmolLM2 agent (docs/tiny-preset.md and
docs/RESULTS.md have their findings).

``picks``: WebShop results pages, the copy rate and pick accuracy of a model there, and
reference pickers (the first hit, a page-reading rule, a linear ranker on hand features, a
language model's likelihood of each hit's title).
``objects``: ScienceWorld room listings and the copy rate of object names.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from eef.policy import Sampling
from eef.trajectory import Trajectory


class ProbeError(ValueError):
    """A probe got nothing to measure on, or a page it cannot read."""


def greedy_turns(policy: Any, contexts: Sequence[Trajectory], max_new_tokens: int
                 ) -> list[str]:
    """The greedy turns of ``policy`` (a Policy or an HF model directory) on ``contexts``."""
    if isinstance(policy, (str, os.PathLike)):
        from eef.models.hf import load_hf_policy
        policy = load_hf_policy(str(policy))
    if not contexts:
        raise ProbeError("no pages to evaluate")
    return policy.act(list(contexts), Sampling(0.0, 1.0, max_new_tokens),
                      list(range(len(contexts))))
