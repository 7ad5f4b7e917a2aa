"""EEF's state and action labelling and its training-sample assembly (Lan et al. 2025, §3).

For an expert trajectory τ = (a_0, ..., a_{n-1}) with states s_0 ... s_n, EEF simulates the agent
from the M + 1 states s_0, s_l, s_2l, ..., s_Ml with ``l = floor(n / (M + 1))``.  A simulated
state is **solvable** when at least one of its samples succeeded.  Between two consecutive
simulated states s_i and s_j:

* unsolvable → solvable: the expert actions a_i .. a_{j-1} are **beneficial** (trained);
* solvable → unsolvable: they are **harmful** (masked out of the loss, Eq. 1);
* otherwise: **neutral** (trained by default; ``train_neutral=False`` masks them).

A state whose replay **diverged** (the env reported the replayed observations ``different``
from the expert's, e.g. ScienceWorld's non-determinism) is not the expert's state s_k: its
simulations carry no evidence about the expert's actions.  Segments touching it are neutral,
it is never an important state, and its solutions are not used as samples.

**Important states** are s_0 of a task the agent did not solve, and **recovery states**: an
unsolvable state right after a solvable one (the agent is stuck after an expert mistake).  For
each important state s_i, the next solvable state s_j (j > i) holds an agent solution; the
training sample is the expert prefix up to s_j — harmful steps masked, beneficial steps trained
— followed by that solution's own steps (trained).  When several solutions start at s_j, the
keep rule ``shortest`` takes the one the **selection rule** picks (highest reward, then fewest
steps, then lowest sample index); ``distinct`` and ``all`` make a sample of each (the rule of
RFT's successes, ``method.rft_keep``).  An important state with no later solvable state yields
no sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eef.rollout.engine import simulation_states  # noqa: F401  (re-exported)
from eef.trajectory import Step, Trajectory

BENEFICIAL, HARMFUL, NEUTRAL, UNUSED = "beneficial", "harmful", "neutral", "unused"


@dataclass
class StateOutcome:
    """What the agent did from expert state s_k."""

    k: int
    samples: list[Trajectory] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        """Every sample's replay of the expert prefix differed from the record."""
        return self.k > 0 and bool(self.samples) and all(
            t.meta.get("replay_match") == "different" for t in self.samples)

    @property
    def solved(self) -> bool:
        return any(t.success for t in self.samples)

    def wins(self) -> list[Trajectory]:
        """The successful samples in the order of the selection rule: highest reward, then
        fewest steps, then lowest sample index."""
        wins = sorted(((i, t) for i, t in enumerate(self.samples) if t.success),
                      key=lambda it: (-it[1].reward, len(it[1]), it[0]))
        return [t for _, t in wins]

    def best(self) -> Trajectory | None:
        """The selection rule's pick (None: no sample succeeded)."""
        return next(iter(self.wins()), None)


def label_actions(n_steps: int, outcomes: list[StateOutcome]) -> list[str]:
    """Per expert action: beneficial / harmful / neutral between simulated states, ``unused``
    after the last simulated state."""
    outs = sorted(outcomes, key=lambda o: o.k)
    labels = [UNUSED] * n_steps
    for a, b in zip(outs, outs[1:]):
        kind = (NEUTRAL if (a.diverged or b.diverged) else
                BENEFICIAL if (not a.solved and b.solved) else
                HARMFUL if (a.solved and not b.solved) else NEUTRAL)
        for t in range(a.k, min(b.k, n_steps)):
            labels[t] = kind
    return labels


def important_states(outcomes: list[StateOutcome], task_solved_from_start: bool) -> list[int]:
    """k of the important states: s_0 when the task is unsolved, and the recovery states."""
    outs = sorted(outcomes, key=lambda o: o.k)
    ks: list[int] = []
    if outs and outs[0].k == 0 and not task_solved_from_start and not outs[0].solved:
        ks.append(0)
    for a, b in zip(outs, outs[1:]):
        if a.solved and not b.solved and not (a.diverged or b.diverged):
            ks.append(b.k)
    return ks


def expert_name(t: Trajectory) -> str:
    """Which expert made ``t``: ``source.expert`` (``expert.policies`` / ``expert.trajectories``
    entry), else its policy spec."""
    return str(t.source.get("expert") or t.source.get("policy") or "expert")


def build_sample(expert: Trajectory, labels: list[str], solution: Trajectory, k: int,
                 train_neutral: bool = True) -> Trajectory:
    """Expert prefix a_0 .. a_{k-1} (harmful masked, beneficial trained, neutral per
    ``train_neutral``) + the steps of ``solution`` after its own replayed prefix (trained)."""
    start = int(solution.source.get("start_state", k))
    if start != k:
        raise ValueError(f"solution starts at state {start}, not {k}")
    if [s.action for s in solution.steps[:k]] != expert.actions[:k]:
        raise ValueError("the solution's first k actions are not the expert's")
    steps: list[Step] = []
    # the prefix as the agent saw it (replayed observations), labelled from the expert's run
    for i, s in enumerate(solution.steps[:k]):
        lab = labels[i] if i < len(labels) else UNUSED
        train = lab == BENEFICIAL or (lab in (NEUTRAL, UNUSED) and train_neutral)
        steps.append(Step(s.action, s.observation, s.thought, s.reward, train=train, label=lab,
                          valid=s.valid))
    for s in solution.steps[k:]:
        steps.append(Step(s.action, s.observation, s.thought, s.reward, train=True,
                          label="agent", valid=s.valid))
    return Trajectory(expert.task_id, expert.env, expert.instruction,
                      solution.initial_observation, steps, solution.reward, solution.success, True,
                      {"kind": "eef", "parent": expert.source.get("id", expert.task_id),
                       "expert": expert_name(expert), "start_state": k,
                       "policy": solution.source.get("policy"),
                       "sample": solution.source.get("sample")},
                      {"expert_policy": expert.source.get("policy")})


def eef_samples(expert: Trajectory, outcomes: list[StateOutcome], task_solved_from_start: bool,
                train_neutral: bool = True, keep: str = "shortest"
                ) -> tuple[list[Trajectory], list[str], list[int]]:
    """Training samples from one expert trajectory: (samples, action labels, important k).

    ``keep`` (``method.rft_keep``): ``shortest`` builds one sample per important state from the
    selection rule's solution; ``distinct`` and ``all`` one from every successful solution at
    the next solvable state (in the selection rule's order; the positive repository then drops
    repeated action sequences under ``distinct``)."""
    outs = sorted(outcomes, key=lambda o: o.k)
    labels = label_actions(len(expert), outs)
    important = important_states(outs, task_solved_from_start)
    samples: list[Trajectory] = []
    seen: set[int] = set()
    for k in important:
        nxt = next((o for o in outs if o.k > k and o.solved and not o.diverged), None)
        if nxt is None or nxt.k in seen:
            continue
        seen.add(nxt.k)
        wins = nxt.wins()
        for solution in wins[:1] if keep == "shortest" else wins:
            sample = build_sample(expert, labels, solution, nxt.k, train_neutral)
            sample.meta["important_state"] = k
            sample.meta["recovery"] = k > 0
            samples.append(sample)
    return samples, labels, important
