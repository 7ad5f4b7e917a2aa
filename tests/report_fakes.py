"""Hand-built run directories for the report tests and benchmark: the files ``eef run`` writes
(config.yaml, metrics.jsonl, expert.jsonl, rollouts, data, labels) with seeded random outcomes.

EEF's labels and samples are made by the real ``eef.algorithms.labels.eef_samples`` from the
random simulation outcomes, and the records are written as ``eef.algorithms.eef`` writes them,
so the files are consistent with each other the way a real run's are.  Trajectory text carries
markup (``<script>``, ``</script>``, ``&``) to test escaping.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from pathlib import Path

import yaml

from eef.algorithms.labels import LabelRecord, StateOutcome, eef_samples, simulation_states
from eef.algorithms.positives import PositiveRepository
from eef.rollout.budget import Budget
from eef.rollout.engine import trajectory_id
from eef.rollout.episode import summarize
from eef.trajectory import Step, Trajectory, write_jsonl

EVIL = ("<script>window.__pwned='script'</script></script><img src=x onerror=window.__pwned=1>"
        " & &amp; \u2028")
NAV = ["click[next >]", "click[< prev]", "click[back to search]"]


def _actions(rng: random.Random, n: int, nav: bool) -> list[str]:
    acts = [f"search[item {rng.randint(0, 99)}]"]
    while len(acts) < n - 1:
        acts.append(rng.choice(NAV) if nav and rng.random() < 0.5 else f"click[b0{rng.randint(0, 9)}]")
    return (acts + ["click[buy now]"])[:n]


OBS_WORDS = [40]  # longest filler of an observation, in pairs of words (the benchmark raises it)


def _traj(rng, task: str, env: str, actions: list[str], success: bool, source: dict,
          prefix: list[Step] | None = None) -> Trajectory:
    steps = [Step(**dataclasses.asdict(s)) for s in (prefix or [])]
    for a in actions:
        steps.append(Step(a, f"page after {a} {EVIL} " + "lorem ipsum " * rng.randint(0, OBS_WORDS[0]),
                          thought=f"I do {a}"))
    r = 1.0 if success else round(rng.random() * 0.8, 3)
    t = Trajectory(task, env, f"buy {task} {EVIL}", f"WebShop [SEP] Instruction: {task}", steps,
                   r, success, True, dict(source),
                   {"generated_tokens": 10 * len(actions), "env_steps": len(actions),
                    "prompt_tokens": 100 * len(actions), "prefill_tokens": 30 * len(actions),
                    "replay_steps": len(prefix or []),
                    "replay_match": "exact" if rng.random() < 0.9 else "different"})
    return t


def write_fake_run(out: Path, task_ids: list[str], eval_ids: list[str], *, seed: int = 0,
                   methods=("sft", "rft", "eef"), iterations: int = 2, M: int = 2, S: int = 1,
                   env: str = "webshop", p_win: float = 0.4) -> Path:
    """A run directory at ``out`` as ``eef compare`` leaves one seed's (every method in it)."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"env": {"name": env, "options": {"max_steps": 8}, "train_tasks": len(task_ids),
                   "eval_tasks": len(eval_ids)},
           "method": {"name": "eef", "iterations": iterations, "M": M, "samples_per_state": S},
           "expert": {"policy": f"expert:fake {EVIL}"}, "seed": seed}
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    metrics: list[dict] = []
    experts = []
    for t in task_ids:
        ok = rng.random() < 0.5
        tr = _traj(rng, t, env, _actions(rng, rng.randint(3, 8), rng.random() < 0.5), ok,
                   {"kind": "expert", "policy": "expert:fake", "start_state": 0,
                    "id": f"expert/{t}"})
        experts.append(tr)
    write_jsonl(out / "expert.jsonl", experts)
    metrics.append({"stage": "expert", "method": "expert", "iteration": None, "split": "train",
                    **summarize(experts)})
    successes = [t for t in experts if t.success]

    def evaluate(method: str, it: int, name: str) -> dict:
        trajs = [_traj(rng, t, env, _actions(rng, rng.randint(2, 6), rng.random() < 0.6),
                       rng.random() < p_win, {"kind": "policy", "start_state": 0})
                 for t in eval_ids]
        write_jsonl(out / f"rollouts/eval/{name}.jsonl", trajs)
        row = {"stage": f"eval/{name}", "key": f"k{rng.random()}", "method": method,
               "iteration": it, "split": "test", **summarize(trajs)}
        metrics.append(row)
        return row

    write_jsonl(out / "data/sft.jsonl", successes)
    evaluate("sft", 0, "sft")
    for method in methods:
        if method == "sft":
            continue
        positives, budget = PositiveRepository(), Budget()
        explored = [t for t in experts if not t.success]
        for i in range(1, iterations + 1):
            s0 = [_traj(rng, t, env, _actions(rng, rng.randint(2, 5), False), rng.random() < p_win,
                        {"kind": "policy", "start_state": 0, "sample": j})
                  for t in task_ids for j in range(S)]
            write_jsonl(out / f"rollouts/{method}/it{i}/s0.jsonl", s0)
            by_task = defaultdict(list)
            for t in s0:
                by_task[t.task_id].append(t)
                positives.offer(("s0", t.task_id), t)
            b = Budget.of(s0)
            n_samples = n_rec = 0
            row_extra = {}
            if method == "eef":
                sims, records = [], []
                for tau in explored:
                    pid = trajectory_id(tau)
                    outcomes = []
                    for k in simulation_states(len(tau), M):
                        if k == 0:
                            outcomes.append(StateOutcome(0, list(by_task[tau.task_id])))
                            continue
                        got = [_traj(rng, tau.task_id, env, _actions(rng, rng.randint(1, 4), True),
                                     rng.random() < p_win,
                                     {"kind": "simulation", "start_state": k, "parent": pid,
                                      "sample": j}, prefix=tau.steps[:k])
                               for j in range(S)]
                        sims += got
                        outcomes.append(StateOutcome(k, got))
                    samples, labels, important = eef_samples(
                        tau, outcomes, any(t.success for t in by_task[tau.task_id]))
                    for s in samples:
                        if positives.offer(("eef", pid, s.meta["important_state"]), s):
                            n_samples += 1
                            n_rec += bool(s.meta["recovery"])
                    records.append(LabelRecord.of(tau, pid, outcomes, labels, important,
                                                  len(samples)))
                write_jsonl(out / f"rollouts/{method}/it{i}/sim.jsonl", sims)
                (out / "labels").mkdir(exist_ok=True)
                (out / f"labels/{method}-it{i}.jsonl").write_text(
                    "".join(json.dumps(r.to_dict()) + "\n" for r in records))
                b = b + Budget.of(sims)
                row_extra = {"new_eef_samples": n_samples, "new_recovery_samples": n_rec}
            budget += b
            write_jsonl(out / f"data/{method}/it{i}.jsonl", successes + positives.trajectories())
            row = evaluate(method, i, f"{method}/it{i}")
            metrics.append({"stage": f"{method}/it{i}/budget", "method": method, "iteration": i,
                            "positives": len(positives), **row_extra,
                            "budget": budget.counts(), "eval": row["win_rate"]})
    with open(out / "metrics.jsonl", "w") as f:
        for r in metrics:
            f.write(json.dumps(r) + "\n")
    return out
