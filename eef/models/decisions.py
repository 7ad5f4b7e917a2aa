"""Did a fine-tuned agent learn the *decisions* of its training turns, not only their words?

Every agent turn starts with a decision token: the first word of the thought (``I`` search,
``#3`` looks closest, ``This`` product has no ...) or, in a turn without a thought, the
action's first token; the rest is mostly copied from the page or the instruction.  The mean
per-token loss hides a wrong decision under many well-copied tokens (docs/models.md, "Loss
mask": a model with loss 0.075 per token on its first turns gave P 0.26 to their decision
token and won 2.6% of the test goals; retrained with another seed, P 0.55 and 18.1%).

``decision_scores`` scores each trained turn in the prompt the agent sees at that step (chat
format, identifier aliases and context trimming as in rollouts); ``decision_summary`` reduces
the records to the figures ``train_sft`` writes next to a model (``decisions.json``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

from eef.trajectory import Trajectory


def decision_scores(policy: Any, trajs: Sequence[Trajectory], max_context: int = 1024,
                    max_new_tokens: int = 96, trim_block: int = 4,
                    turns_per_trajectory: int | None = None) -> list[dict[str, Any]]:
    """One record per trained turn of ``trajs`` (at most ``turns_per_trajectory`` each):
    ``turn`` (index), ``word`` (the decision token's text as the model reads it: an
    identifier is its alias), ``p`` (its probability), ``argmax`` (is it the model's top
    token), ``nll`` (mean over the turn's tokens), ``max_nll``.  ``policy`` is an
    ``HFPolicy``; prompts get ``max_context - max_new_tokens`` tokens, as in ``eef eval``."""
    import torch

    from eef.models.format import trajectory_messages
    fmt, model, tok = policy.format, policy.model, policy.tokenizer
    budget = max_context - max_new_tokens
    out: list[dict[str, Any]] = []
    for traj in trajs:
        n = 0
        for k, step in enumerate(traj.steps):
            if not step.train:
                continue
            if turns_per_trajectory is not None and n >= turns_per_trajectory:
                break
            n += 1
            ctx = Trajectory(task_id=traj.task_id, env=traj.env, instruction=traj.instruction,
                             initial_observation=traj.initial_observation,
                             steps=traj.steps[:k])
            chat = trajectory_messages(ctx, fmt.system)
            prompt = fmt.encode_messages(chat, budget, trim_block)
            turn = policy.turn_tokens(chat, step.turn)
            keyword = "Thought:" if (step.thought or "").strip() else "Action:"
            head = policy.turn_tokens(chat, keyword, end_of_turn=False)
            lead = len(head)  # the turn's tokens before its first word
            if turn[:lead] != head or lead >= len(turn):
                raise ValueError(f"{traj.task_id} step {k}: the turn does not start with "
                                 f"{keyword!r} in this chat format")
            while lead < len(turn) - 1 and not tok.decode([turn[lead]]).strip():
                lead += 1  # a tokenizer with whitespace tokens: the word after it decides
            ids = torch.tensor([prompt + turn])
            with torch.inference_mode():
                logp = model(ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
            nll = -logp.gather(1, torch.tensor(turn)[:, None])[:, 0]
            out.append({"turn": k, "word": tok.decode([turn[lead]]).strip(),
                        "p": math.exp(-float(nll[lead])),
                        "argmax": int(logp[lead].argmax()) == turn[lead],
                        "nll": float(nll.mean()), "max_nll": float(nll.max())})
    return out


def summarize(recs: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
              ) -> list[dict[str, Any]]:
    """Records grouped by ``key`` (largest groups first): turns, mean ``p``, ``argmax``
    share, mean ``nll`` and ``max_nll``."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[key(r)].append(r)
    rows = []
    for g, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0]))):
        n = len(rs)
        rows.append({"group": str(g), "turns": n, "p": _mean(rs, "p"),
                     "argmax": _mean(rs, "argmax"), "nll": _mean(rs, "nll"),
                     "max_nll": _mean(rs, "max_nll")})
    return rows


def decision_summary(recs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``turns``, ``first_turn_p`` / ``first_turn_argmax`` (turn 0), ``later_p`` /
    ``later_argmax`` (the others), ``nll_per_token`` (mean of the turns' means) and
    ``by_word`` (``summarize`` by decision token).  Means of no turn are None."""
    first = [r for r in recs if r["turn"] == 0]
    later = [r for r in recs if r["turn"] > 0]
    return {"turns": len(recs), "first_turn_p": _mean(first, "p"),
            "first_turn_argmax": _mean(first, "argmax"), "later_p": _mean(later, "p"),
            "later_argmax": _mean(later, "argmax"), "nll_per_token": _mean(recs, "nll"),
            "by_word": summarize(recs, lambda r: r["word"])}


def probe_model(model_dir: str | Path, trajs: Sequence[Trajectory], max_context: int,
                system: str | None = None, turns_per_trajectory: int = 4) -> dict[str, Any]:
    """``decision_summary`` of the model saved in ``model_dir`` (loaded as ``eef eval``
    loads it) on ``trajs``."""
    from eef.models.hf import load_hf_policy
    policy = load_hf_policy(str(model_dir), system=system, max_context=max_context)
    new = min(96, max_context // 4)
    return decision_summary(decision_scores(policy, trajs, max_context, new,
                                            turns_per_trajectory=turns_per_trajectory))


def _mean(rs: Sequence[dict[str, Any]], k: str) -> float | None:
    return sum(float(r[k]) for r in rs) / len(rs) if rs else None
