"""How well a fine-tuned agent learnt the *decisions* of its training turns, not just their
copied words (``eef.models.decisions``): for every trained turn of the trajectories, the
probability the model gives the turn's decision token (the thought's first token: which kind
of turn it takes, search, pick a hit, pick an option, buy ...; the action's first token in a
turn without a thought) against the mean per-token loss of the whole turn (mostly words copied
from the page or the instruction).

    python benchmarks/turn_decisions.py MODEL DATA.jsonl [--limit N] [--max-context T] [--json]

MODEL is an ``hf:`` directory (a LoRA adapter directory works), DATA the trajectories it was
trained on (or held-out ones).  Each turn is scored in the prompt the agent sees at that step
(the chat format, identifier aliases and context trimming of ``eef eval``).  Rows: by turn
index (0 = the first turn) and by the decision token.  Figures
per row: turns, mean P(decision token), share where that token is the model's argmax, mean
NLL per turn token, mean of each turn's largest token NLL.
JSON keys: ``turns``, ``first_turn_p``, ``first_turn_argmax``, ``later_p``, ``later_argmax``,
``nll_per_token``, ``rows``.
"""

from __future__ import annotations

from _util import emit, parser, table


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("model", help="hf: model directory (or LoRA adapter directory)")
    p.add_argument("data", help="trajectories JSONL")
    p.add_argument("--limit", type=int, default=32, help="first N trajectories")
    p.add_argument("--max-context", type=int, default=1024)
    p.add_argument("--trim-block", type=int, default=4)
    a = p.parse_args()
    from eef.models.decisions import decision_scores, decision_summary, summarize
    from eef.models.hf import load_hf_policy
    from eef.trajectory import read_jsonl
    spec = a.model[3:] if a.model.startswith("hf:") else a.model
    policy = load_hf_policy(spec, max_context=a.max_context)
    trajs = read_jsonl(a.data)[: 8 if a.quick else a.limit]
    recs = decision_scores(policy, trajs, a.max_context, trim_block=a.trim_block)
    if not recs:
        raise SystemExit(f"{a.data}: no trained turn to score")
    by_turn = summarize(recs, lambda r: r["turn"] if r["turn"] < 4 else "4+")
    by_word = summarize(recs, lambda r: r["word"])
    head = ["group", "turns", "P(decision)", "argmax", "NLL/token", "max NLL"]
    for title, rows in (("by turn index", by_turn), ("by the decision token", by_word)):
        table(f"{a.model}: {title}", head, [[r["group"], r["turns"], r["p"], r["argmax"],
                                             r["nll"], r["max_nll"]] for r in rows])
    fig = decision_summary(recs)
    fig.pop("by_word")
    emit({**fig, "rows": by_turn + by_word}, a.json)


if __name__ == "__main__":
    main()
