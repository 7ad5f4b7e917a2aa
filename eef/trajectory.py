"""Trajectories: what an expert, an agent or a simulation did in one episode.

A ``Trajectory`` holds the task, the first observation and one ``Step`` per action.  Each step
carries a ``train`` flag: the loss mask of Eq. 1 of the paper (EEF sets it to False on harmful
expert actions) and an optional ``label`` (``beneficial`` / ``harmful`` / ``neutral``).

``source`` is the trajectory's ``Provenance``: who made it and from which state (kind,
policy, parent, start state, sample, seed, ...); keys other writers add (a preset drill's task,
an importer's ids) are kept in ``Provenance.extra``.  On disk it is a plain JSON object.

JSONL: one ``Trajectory.to_dict()`` per line; ``read_jsonl(write_jsonl(t)) == t`` exactly, and
a file written before ``Provenance`` existed reads and writes back the same objects.
ShareGPT: the ``{"id", "conversations": [{"from": "human"|"gpt", "value", "loss"?}]}`` format used
by ETO and AgentGym (``gpt`` turns are ``Thought: ...\\nAction: ...``; ``human`` turns after the
first are ``Observation: ...``).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

from eef.react import parse_turn, render_turn


class TrajectoryFormatError(ValueError):
    """A trajectory file or record is malformed; the message names the file and line."""


@dataclass
class Provenance:
    """Where a trajectory comes from (``Trajectory.source``).  Every field is optional: None
    means not recorded, and such a field is left out of the JSON object.

    ``kind``: ``expert`` | ``policy`` (a rollout from s_0) | ``simulation`` (from an expert
    state) | ``eef`` (an EEF training sample) | ``import`` | ``pretrain`` | ...;
    ``policy``: the spec string (``expert:heuristic``, ``hf:DIR``); ``policy_version``: the
    stage or checkpoint that produced it; ``start_state``: the number k of expert steps replayed
    before the policy took over; ``parent``: the id of the expert trajectory those steps come
    from; ``fresh_step_limit``: the env's step limit counted from s_k; ``sample``: the sample
    index at that state; ``seed``: the episode seed; ``sampling``: the decoding parameters;
    ``expert``: which expert (``expert.policies`` / ``expert.trajectories`` entry);
    ``id``: a recorded trajectory's own id; ``extra``: every other key, kept as read."""

    kind: str | None = None
    policy: str | None = None
    policy_version: str | None = None
    start_state: int | None = None
    parent: str | None = None
    fresh_step_limit: bool | None = None
    sample: int | None = None
    seed: int | None = None
    sampling: dict[str, Any] | None = None
    expert: str | None = None
    id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Provenance":
        """From its JSON object (any keys: those that are not fields go to ``extra``)."""
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names},
                   extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (a copy): the recorded fields, then ``extra``'s keys."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return copy.deepcopy({**{k: v for k, v in out.items() if v is not None}, **self.extra})

    def copy(self) -> "Provenance":
        return replace(self, extra=dict(self.extra),
                       sampling=dict(self.sampling) if self.sampling is not None else None)


@dataclass
class Step:
    action: str
    observation: str
    thought: str = ""
    reward: float = 0.0
    train: bool = True
    label: str | None = None
    valid: bool = True

    @property
    def turn(self) -> str:
        """The agent's turn text: ``Thought: ...\\nAction: ...``."""
        return render_turn(self.thought, self.action)


@dataclass
class Trajectory:
    task_id: str
    env: str
    instruction: str
    initial_observation: str
    steps: list[Step] = field(default_factory=list)
    reward: float = 0.0
    success: bool = False
    done: bool = False
    source: Provenance = field(default_factory=Provenance)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.source, dict):  # a JSON object (as written to files)
            self.source = Provenance.from_dict(self.source)

    # -- views ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps]

    @property
    def observations(self) -> list[str]:
        return [s.observation for s in self.steps]

    @property
    def observation(self) -> str:
        """The current (last) observation."""
        return self.steps[-1].observation if self.steps else self.initial_observation

    def prefix(self, k: int) -> "Trajectory":
        """The first ``k`` steps (state s_k), not done, no final reward."""
        return Trajectory(self.task_id, self.env, self.instruction, self.initial_observation,
                          [Step(**asdict(s)) for s in self.steps[:k]], 0.0, False, False,
                          self.source.copy(), dict(self.meta))

    # -- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": self.source.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        if not isinstance(d, dict):
            raise TrajectoryFormatError(f"not a trajectory record (a JSON {type(d).__name__})")
        try:
            steps = [s if isinstance(s, Step) else Step(**s) for s in d.get("steps", [])]
            return cls(task_id=str(d["task_id"]), env=str(d["env"]),
                       instruction=str(d.get("instruction", "")),
                       initial_observation=str(d.get("initial_observation", "")),
                       steps=steps, reward=float(d.get("reward", 0.0)),
                       success=bool(d.get("success", False)), done=bool(d.get("done", False)),
                       source=Provenance.from_dict(dict(d.get("source") or {})),
                       meta=dict(d.get("meta") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TrajectoryFormatError(f"not a trajectory record ({type(e).__name__}: {e})") from e


def dumps_line(d: dict[str, Any]) -> str:
    """One JSON line; readable UTF-8 when possible, ASCII escapes when the text holds lone
    surrogates (still an exact round trip)."""
    line = json.dumps(d, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(d, ensure_ascii=True)
    return line + "\n"


def write_jsonl(path: str | os.PathLike, trajs: Iterable[Trajectory], append: bool = False) -> int:
    """Write trajectories, one JSON object per line (flushed per line). Returns the count."""
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for t in trajs:
            f.write(dumps_line(t.to_dict()))
            f.flush()
            n += 1
    return n


def iter_jsonl(path: str | os.PathLike, skip_partial_last_line: bool = True) -> Iterator[Trajectory]:
    """Read trajectories.  A truncated last line (a writer killed mid-line) is skipped when
    ``skip_partial_last_line``; any other malformed line raises ``TrajectoryFormatError``."""
    p = Path(path)
    if not p.exists():
        raise TrajectoryFormatError(f"{p}: no such trajectory file")
    with open(p, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            if skip_partial_last_line and i == len(lines) and not line.endswith("\n"):
                return
            raise TrajectoryFormatError(f"{p}:{i}: invalid JSON ({e.msg})") from e
        try:
            yield Trajectory.from_dict(d)
        except TrajectoryFormatError as e:
            raise TrajectoryFormatError(f"{p}:{i}: {e}") from e


def read_jsonl(path: str | os.PathLike) -> list[Trajectory]:
    return list(iter_jsonl(path))


# -- ShareGPT (ETO / AgentGym) -------------------------------------------------------------
def to_sharegpt(t: Trajectory, system: str | None = None) -> dict[str, Any]:
    """One conversation: the task (and optional system text) as the first human turn, then
    ``gpt`` turns ``Thought/Action`` and ``human`` turns ``Observation: ...``.  ``loss`` marks
    the trained agent turns (AgentGym's convention)."""
    first = t.initial_observation if not system else f"{system}\n{t.initial_observation}"
    conv: list[dict[str, Any]] = [{"from": "human", "value": first, "loss": False}]
    for s in t.steps:
        conv.append({"from": "gpt", "value": s.turn, "loss": bool(s.train)})
        conv.append({"from": "human", "value": f"Observation: {s.observation}", "loss": False})
    return {"id": t.task_id, "conversations": conv, "reward": t.reward, "success": t.success}


def from_sharegpt(d: dict[str, Any], env: str, instruction: str = "") -> Trajectory:
    """Inverse of ``to_sharegpt`` (also reads ETO files, where ``loss`` is absent and leading
    human/gpt exchanges before the first observation form the prompt)."""
    conv = d.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise TrajectoryFormatError("ShareGPT record without 'conversations'")
    tid = str(d.get("id", d.get("item_id", "")))
    first_obs = ""
    steps: list[Step] = []
    pending: tuple[str, str, bool] | None = None
    for turn in conv:
        who, val = turn.get("from"), str(turn.get("value", ""))
        if who in ("gpt", "assistant"):
            if pending is not None:  # two agent turns in a row: the first had no observation
                steps.append(Step(pending[1], "", pending[0], train=pending[2]))
            th, act = parse_turn(val)
            pending = (th, act, bool(turn.get("loss", True)))
        elif who in ("human", "user"):
            obs = val[len("Observation:"):].strip() if val.startswith("Observation:") else val
            if pending is None:
                first_obs = obs if not steps else first_obs
                continue
            steps.append(Step(pending[1], obs, pending[0], train=pending[2]))
            pending = None
        else:
            raise TrajectoryFormatError(f"ShareGPT turn with unknown role {who!r}")
    if pending is not None:
        steps.append(Step(pending[1], "", pending[0], train=pending[2]))
    reward = float(d.get("reward", 0.0))
    return Trajectory(tid, env, instruction, first_obs, steps, reward,
                      bool(d.get("success", reward >= 1.0)), True, Provenance("import"))
