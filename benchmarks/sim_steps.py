"""How many of EEF's labels the step limit of a simulation changes (``method.sim_steps``).

A simulation from expert state s_k gets either the steps left of the env's limit
(``remaining``: max_steps - k) or the env's whole limit counted from s_k (``full``).  On WebShop
with scripted experts (``heuristic``, ``noisy``) and scripted agents (``noisy``, sampled: a
heuristic learner; ``oracle``: one that knows the target and needs only the steps), this
labels every failed expert trajectory both ways and counts what differs: solvable states,
action labels, harmful actions, recovery states and EEF samples.

    python benchmarks/sim_steps.py [--quick] [--json]
"""

from __future__ import annotations

import itertools
import random

from _util import emit, parser, table


def label_both_ways(env_kw: dict, experts: list, agent: str, M: int, S: int) -> dict[str, int]:
    """Label the failed ``experts`` with simulations of ``agent`` under both step limits."""
    from eef.algorithms.labels import (HARMFUL, StateOutcome, eef_samples, simulation_requests,
                                       simulation_states)
    from eef.envs import make
    from eef.policy import Sampling, load_policy
    from eef.rollout.engine import EngineConfig, RolloutRequest, rollout, trajectory_id
    from eef.rollout.pool import EnvSpec
    env = make("webshop", **env_kw)
    pol = load_policy(agent, env)
    cfg = EngineConfig(num_envs=8, progress=False)
    spec = EnvSpec("webshop", env_kw)
    smp = Sampling(1.0)
    tasks = sorted({t.task_id for t in experts})
    s0 = rollout(spec, pol, [RolloutRequest(t, samples=S, sampling=smp, seed=11) for t in tasks],
                 config=cfg).trajectories
    runs = {}
    for mode in ("remaining", "full"):
        reqs = [r for t in experts for r in simulation_requests(
            t, M, S, sampling=smp, seed=11, include_start=False, fresh_step_limit=mode == "full")]
        sims = rollout(spec, pol, reqs, config=cfg).trajectories
        at = {}
        for t in sims:
            at.setdefault((t.source.parent, t.source.start_state), []).append(t)
        out = []
        for t in experts:
            start = [x for x in s0 if x.task_id == t.task_id]
            outs = [StateOutcome(k, start if k == 0 else at.get((trajectory_id(t), k), []))
                    for k in simulation_states(len(t), M)]
            samples, labels, important = eef_samples(t, outs, any(x.success for x in start))
            out.append(([o.solved for o in outs], labels, [k for k in important if k > 0],
                        len(samples)))
        runs[mode] = out
    c = {"trajectories": len(experts), "states": 0, "states_changed": 0, "actions": 0,
         "labels_changed": 0, "harmful_remaining": 0, "harmful_full": 0,
         "recovery_remaining": 0, "recovery_full": 0, "samples_remaining": 0, "samples_full": 0}
    for (sr, lr, rr, nr), (sf, lf, rf, nf) in zip(runs["remaining"], runs["full"]):
        c["states"] += len(sr) - 1
        c["states_changed"] += sum(a != b for a, b in zip(sr, sf))
        c["actions"] += len(lr)
        c["labels_changed"] += sum(a != b for a, b in zip(lr, lf))
        c["harmful_remaining"] += lr.count(HARMFUL)
        c["harmful_full"] += lf.count(HARMFUL)
        c["recovery_remaining"] += len(rr)
        c["recovery_full"] += len(rf)
        c["samples_remaining"] += nr
        c["samples_full"] += nf
    env.close()
    return c


def main() -> None:
    args = parser(__doc__).parse_args()
    from eef.envs import make
    from eef.policy import load_policy
    from eef.rollout.episode import run_episode
    n = 60 if args.quick else 300
    rows, figs = [], {}
    for max_steps in (10, 15):
        env = make("webshop", max_steps=max_steps)
        ids = random.Random(0).sample([t.id for t in env.tasks("train")], n)
        for expert in ("heuristic", "noisy"):
            pol = load_policy(f"expert:{expert}", env)
            failed = [t for t in (run_episode(env, pol, i) for i in ids) if not t.success]
            for agent, M in itertools.product(("noisy", "oracle"), (2, 5)):
                c = label_both_ways({"max_steps": max_steps}, failed, f"expert:{agent}", M, 2)
                figs[f"steps{max_steps}_{expert}_{agent}_M{M}"] = c
                rows.append([max_steps, expert, agent, M, c["trajectories"],
                             f"{c['states_changed']}/{c['states']}",
                             f"{c['labels_changed']}/{c['actions']} "
                             f"({100 * c['labels_changed'] / max(1, c['actions']):.1f}%)",
                             f"{c['harmful_remaining']} -> {c['harmful_full']}",
                             f"{c['recovery_remaining']} -> {c['recovery_full']}",
                             f"{c['samples_remaining']} -> {c['samples_full']}"])
        env.close()
    table("EEF labels with sim_steps remaining -> full (2 agent samples a state)",
          ["max_steps", "expert", "agent", "M", "failed trajectories", "states changed",
           "action labels changed", "harmful actions", "recovery states", "samples"], rows)
    emit(figs, args.json)


if __name__ == "__main__":
    main()
