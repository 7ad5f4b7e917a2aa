"""How well a fine-tuned agent learnt the *decisions* of its training turns, not just their
copied words: for every turn of an expert trajectory, the probability the model gives the
first token of the expert's thought (which kind of turn it takes: search, pick a hit, pick an
option, buy ...) against the mean per-token loss of the whole turn (mostly words copied from
the page or the instruction).

    python benchmarks/turn_decisions.py MODEL DATA.jsonl [--limit N] [--max-context T] [--json]

MODEL is an ``hf:`` directory (a LoRA adapter directory works), DATA the trajectories it was
trained on (or held-out ones).  Each turn is scored in the prompt the agent sees at that step
(the chat format, identifier aliases and context trimming of ``eef eval``).  Rows: by turn
index (0 = the first turn) and by the decision token (the thought's first token).  Figures
per row: turns, mean P(decision token), share where that token is the model's argmax, mean
NLL per turn token, mean of each turn's largest token NLL.
JSON keys: ``turns``, ``first_turn_p``, ``first_turn_argmax``, ``later_p``, ``later_argmax``,
``nll_per_token``, ``rows``.
"""

from __future__ import annotations

import math
from collections import defaultdict

from _util import emit, parser, table


def decision_scores(policy, trajs, max_context: int = 1024, trim_block: int = 4,
                    max_new_tokens: int = 96) -> list[dict]:
    """One record per turn: ``turn`` (index), ``word`` (the decision token's text, as the
    model reads it: an identifier is its alias), ``p`` (probability of the thought's first
    token), ``argmax`` (is it the model's top token), ``nll`` (mean over the turn's tokens),
    ``max_nll``."""
    import torch

    from eef.models.format import trajectory_messages
    from eef.trajectory import Trajectory
    fmt, model = policy.format, policy.model
    budget = max_context - max_new_tokens
    out = []
    for traj in trajs:
        for k, step in enumerate(traj.steps):
            if not step.thought:
                continue
            ctx = Trajectory(task_id=traj.task_id, env=traj.env, instruction=traj.instruction,
                             initial_observation=traj.initial_observation,
                             steps=traj.steps[:k])
            chat = trajectory_messages(ctx, fmt.system)
            prompt = fmt.encode_messages(chat, budget, trim_block)
            turn = policy.turn_tokens(chat, step.turn)
            head = policy.turn_tokens(chat, "Thought:", end_of_turn=False)
            lead = len(head)  # the turn's tokens before the thought's first word
            if turn[:lead] != head or lead >= len(turn):
                raise ValueError(f"{traj.task_id} step {k}: the turn does not start with "
                                 "'Thought:' in this chat format")
            while lead < len(turn) - 1 and not policy.tokenizer.decode([turn[lead]]).strip():
                lead += 1  # a tokenizer with whitespace tokens: the word after it decides
            ids = torch.tensor([prompt + turn])
            with torch.no_grad():
                logp = model(ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
            tgt = torch.tensor(turn)
            nll = -logp.gather(1, tgt[:, None])[:, 0]
            out.append({"turn": k, "word": policy.tokenizer.decode([turn[lead]]).strip(),
                        "p": math.exp(-float(nll[lead])),
                        "argmax": int(logp[lead].argmax()) == turn[lead],
                        "nll": float(nll.mean()), "max_nll": float(nll.max())})
    return out


def summarize(recs: list[dict], key) -> list[dict]:
    groups: dict = defaultdict(list)
    for r in recs:
        groups[key(r)].append(r)
    rows = []
    for g, rs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), str(kv[0]))):
        n = len(rs)
        rows.append({"group": str(g), "turns": n,
                     "p": sum(r["p"] for r in rs) / n,
                     "argmax": sum(r["argmax"] for r in rs) / n,
                     "nll": sum(r["nll"] for r in rs) / n,
                     "max_nll": sum(r["max_nll"] for r in rs) / n})
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("model", help="hf: model directory (or LoRA adapter directory)")
    p.add_argument("data", help="trajectories JSONL")
    p.add_argument("--limit", type=int, default=32, help="first N trajectories")
    p.add_argument("--max-context", type=int, default=1024)
    p.add_argument("--trim-block", type=int, default=4)
    a = p.parse_args()
    from eef.models.hf import load_hf_policy
    from eef.trajectory import read_jsonl
    spec = a.model[3:] if a.model.startswith("hf:") else a.model
    policy = load_hf_policy(spec, max_context=a.max_context)
    trajs = read_jsonl(a.data)[: 8 if a.quick else a.limit]
    recs = decision_scores(policy, trajs, a.max_context, a.trim_block)
    if not recs:
        raise SystemExit(f"{a.data}: no turn with a thought to score")
    by_turn = summarize(recs, lambda r: r["turn"] if r["turn"] < 4 else "4+")
    by_word = summarize(recs, lambda r: r["word"])
    head = ["group", "turns", "P(decision)", "argmax", "NLL/token", "max NLL"]
    for title, rows in (("by turn index", by_turn), ("by the decision token", by_word)):
        table(f"{a.model}: {title}", head, [[r["group"], r["turns"], r["p"], r["argmax"],
                                             r["nll"], r["max_nll"]] for r in rows])
    first = [r for r in recs if r["turn"] == 0]
    later = [r for r in recs if r["turn"] > 0]

    def mean(rs, k):
        return sum(r[k] for r in rs) / len(rs) if rs else float("nan")
    emit({"turns": len(recs), "first_turn_p": mean(first, "p"),
          "first_turn_argmax": mean(first, "argmax"), "later_p": mean(later, "p"),
          "later_argmax": mean(later, "argmax"), "nll_per_token": mean(recs, "nll"),
          "rows": by_turn + by_word}, a.json)


if __name__ == "__main__":
    main()
