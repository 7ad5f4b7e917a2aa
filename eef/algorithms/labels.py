"""EEF's simulated states, its state and action labelling and its training-sample assembly
(Lan et al. 2025, §3).

For an expert trajectory τ = (a_0, ..., a_{n-1}) with states s_0 ... s_n, EEF simulates the agent
from the M + 1 states s_0, s_l, s_2l, ..., s_Ml with ``l = floor(n / (M + 1))``
(``simulation_states``; ``simulation_requests`` asks the rollout engine for them).  A simulated
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

Each explored trajectory's outcome in an iteration is a ``LabelRecord``, one JSON line of
``labels/METHOD-itI.jsonl`` (read by the report's Figure 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from eef.policy import Sampling
from eef.rollout.engine import RolloutRequest, RolloutRequestError
from eef.trajectory import Provenance, Step, Trajectory

BENEFICIAL, HARMFUL, NEUTRAL, UNUSED = "beneficial", "harmful", "neutral", "unused"


def simulation_states(n_steps: int, M: int) -> list[int]:
    """The simulated states of an n-step expert trajectory (Lan et al. 2025, Sec. 3.2):
    s_0, s_l, ..., s_Ml with l = floor(n / (M + 1)); when n < M + 1 (l would be 0), every state
    s_0 .. s_{n-1}."""
    if M < 0:
        raise RolloutRequestError(f"M must be >= 0, got {M}")
    if n_steps <= 0:
        return [0]
    step = n_steps // (M + 1)
    if step == 0:
        return list(range(n_steps))
    return [i * step for i in range(M + 1)]


def simulation_requests(expert: Trajectory, M: int, samples: int = 1, *,
                        sampling: Sampling | None = None, seed: int = 0,
                        include_start: bool = True, fresh_step_limit: bool = False
                        ) -> list[RolloutRequest]:
    """Rollout requests for the simulated states of ``expert`` (``simulation_states``),
    ``samples`` episodes each; ``include_start=False`` leaves s_0 out (EEF's s_0 outcome is the
    task's own rollout).  ``fresh_step_limit``: the env's step limit counts from s_k
    (``method.sim_steps: full``)."""
    return [RolloutRequest(expert.task_id, expert if k else None, k, samples, sampling, seed,
                           fresh_step_limit=fresh_step_limit)
            for k in simulation_states(len(expert), M) if include_start or k]


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
    return str(t.source.expert or t.source.policy or "expert")


def build_sample(expert: Trajectory, labels: list[str], solution: Trajectory, k: int,
                 train_neutral: bool = True) -> Trajectory:
    """Expert prefix a_0 .. a_{k-1} (harmful masked, beneficial trained, neutral per
    ``train_neutral``) + the steps of ``solution`` after its own replayed prefix (trained)."""
    start = int(k if solution.source.start_state is None else solution.source.start_state)
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
                      Provenance("eef", solution.source.policy, start_state=k,
                                 parent=expert.source.id or expert.task_id,
                                 sample=solution.source.sample, expert=expert_name(expert)),
                      {"expert_policy": expert.source.policy})


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


@dataclass
class LabelRecord:
    """What EEF found on one explored expert trajectory in one iteration: a line of
    ``labels/METHOD-itI.jsonl``.  ``parent``: the trajectory's id; ``expert``: which expert
    made it; ``states``: the simulated k, with per state ``solved`` and ``diverged``;
    ``labels``: per expert action; ``important``: the important states' k; ``samples``: the
    training samples built.  Files of older runs may lack ``parent``, ``expert``,
    ``expert_success`` (None), ``diverged`` (all False) and ``important`` (none)."""

    task_id: str
    parent: str | None
    expert: str | None
    expert_success: bool | None
    states: list[int]
    solved: list[bool]
    diverged: list[bool]
    labels: list[str]
    important: list[int]
    samples: int = 0

    @classmethod
    def of(cls, expert: Trajectory, parent: str, outcomes: list[StateOutcome], labels: list[str],
           important: list[int], samples: int) -> "LabelRecord":
        return cls(expert.task_id, parent, expert_name(expert), expert.success,
                   [o.k for o in outcomes], [o.solved for o in outcomes],
                   [o.diverged for o in outcomes], labels, important, samples)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "LabelRecord":
        """From a JSON line; ValueError when it lacks task_id / states / solved / labels or
        its lists do not match."""
        def nums(xs: Any) -> bool:
            return isinstance(xs, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        ok = (isinstance(d, dict) and isinstance(d.get("task_id"), str) and nums(d.get("states"))
              and isinstance(d.get("solved"), list) and len(d["states"]) == len(d["solved"])
              and isinstance(d.get("labels"), list) and nums(d.get("important") or [])
              and (d.get("diverged") is None or (isinstance(d["diverged"], list)
                                                 and len(d["diverged"]) == len(d["states"]))))
        if not ok:
            raise ValueError("a label record needs task_id, states, solved and labels")
        return cls(d["task_id"], d.get("parent"), d.get("expert"), d.get("expert_success"),
                   list(d["states"]), list(d["solved"]),
                   list(d.get("diverged") or [False] * len(d["states"])), list(d["labels"]),
                   list(d.get("important") or []), d.get("samples", 0))
