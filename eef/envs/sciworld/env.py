"""ScienceWorld (Wang et al. 2022) as an eef ``TextEnv``: 30 task types, ETO's protocol, lean steps.

Task ids are ``sciworld/<task name>/<variation>`` (e.g. ``sciworld/boil/21``), with the
simulator's task names; ETO's old names (``task-1-boil``) are accepted wherever a task name is.

Episode.  ``reset(task_id)`` loads the variation (simplification ``easy`` by default) and returns
the task description followed by the output of ``look around``.  ``step(action)`` sends the
action to the simulator and reads back only the observation, score and completion flag (~12 ms;
ScienceWorld's own ``step()`` takes ~500 ms because it lists every valid action each time).
``available_actions()`` does that listing, only when asked.  Every call of ``step`` counts
towards the task's step limit (ETO's per-task limits, 10-120), invalid actions included.

Scores.  ScienceWorld scores a state 0..100, and -100 when the task failed irrecoverably (e.g.
``focus on`` the wrong object); the episode then ends.  eef reports, on [0, 1]:

* ``info["raw_score"]``: the simulator's score of the current state (-100..100);
* ``info["score"]``: the episode score.  With ``score="max"`` (default, ETO's rule) it is the
  highest raw score reached so far / 100, so a -100 keeps the progress made before it (and is
  0 if none was made).  With ``score="final"`` it is the last raw score / 100, a -100 counting
  as 0.  Either way a -100 never enters an average as a negative number;
* ``StepResult.reward``: the increase of the episode score at that step (>= 0 with ``max``),
  so the rewards of an episode add up to its score;
* ``info["success"]`` (when done): the task was completed with raw score 100.
  Win rate = share of successes; mean score = 100 x mean episode score.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Sequence

import scienceworld

from eef.paths import data_dir as _data_dir
from eef.envs.base import (EnvError, EpisodeNotStartedError, Observation, ReplayResult, Split,
                           StepResult, Task, TextEnv, UnknownTaskError)
from eef.envs.sciworld import protocol as P
from eef.envs.sciworld.gold import GoldCache, sciworld_cache
from eef.envs.sciworld.jvm import JvmOptions, Simulator, SimulatorDiedError

#: what the simulator answers to an action it cannot parse; eef uses it for blocked actions too
NO_ACTION = "No known action matches that input."
#: actions longer than this are not sent to the simulator (answered with NO_ACTION)
MAX_ACTION_CHARS = 1000
#: the simulator's own in-episode reset: it would restart the task inside the episode and
#: break step accounting and replay, so eef answers it with NO_ACTION
BLOCKED_ACTIONS = frozenset({"reset task", "reset"})

_ELECTRICAL = ("power-component", "conductivity")
_ID = re.compile(r"^sciworld/([^/]+)/(\d+)$")


@dataclass
class SciWorldConfig:
    """Options of ``SciWorldEnv`` (pass them as keyword arguments)."""

    data_dir: str | None = field(default=None, metadata={
        "help": "Data dir holding sciworld/{train,dev,test}_indices.json and max_steps.json "
                "(ETO's protocol files).  Default: EEF_DATA_DIR, else ~/.cache/eef/data."})
    max_steps: int | None = field(default=None, metadata={
        "help": "Step limit for every task.  Default: ETO's per-task limits (10-120), 100 for "
                "the six tasks outside the protocol."})
    simplification: str = field(default="easy", metadata={
        "help": "ScienceWorld simplifications: `easy` (exactly that string: teleportAction, "
                "openDoors, selfWateringFlowerPots, noElectricalAction except on electrical "
                "tasks) or a comma list of teleportAction, openContainers, openDoors, "
                "selfWateringFlowerPots, noElectricalAction; `` for none."})
    protocol: str = field(default="auto", metadata={
        "help": "Where splits come from: `files` (ETO's files in the data dir), `derived` "
                "(from the simulator's variation ranges, see eef.envs.sciworld.protocol) or "
                "`auto` (files when present, else derived)."})
    score: str = field(default="max", metadata={
        "help": "Episode score: `max` (ETO: highest score reached) or `final` (last score; "
                "-100 counts as 0)."})
    initial_look: bool = field(default=True, metadata={
        "help": "Append the output of `look around` to the task description in the first "
                "observation."})
    sort_listings: bool = field(default=True, metadata={
        "help": "Sort the tab-indented object lines of room / inventory listings.  The "
                "simulator lists objects in an order that changes between loads of the same "
                "variation; sorting makes resets and replays reproduce observations far more "
                "often (see docs/sciworld.md)."})
    replay_retries: int = field(default=2, metadata={
        "help": "replay(): how many more fresh loads to try when the replayed observations "
                "differ from the expected ones (beyond listing order)."})
    train_cap: int = field(default=120, metadata={
        "help": "Derived protocol: at most this many train variations per task."})
    seed: int = field(default=0, metadata={
        "help": "Derived protocol: seed of the train-variation draw."})
    heap_mb: int = field(default=512, metadata={
        "help": "Java heap limit (-Xmx, MiB) of the simulator's JVM."})
    java: str | None = field(default=None, metadata={
        "help": "java executable (default: $JAVA_HOME/bin/java, else java on PATH)."})

    def __post_init__(self) -> None:
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.protocol not in ("auto", "files", "derived"):
            raise ValueError(f"protocol must be auto | files | derived, not {self.protocol!r}")
        if self.score not in ("max", "final"):
            raise ValueError(f"score must be max | final, not {self.score!r}")
        for name, low in (("heap_mb", 64), ("replay_retries", 0), ("train_cap", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        for name in ("sort_listings", "initial_look"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.simplification, str):
            raise ValueError(f"simplification must be a string, got {self.simplification!r}")
        parts = [p for p in self.simplification.split(",") if p]
        known = {"teleportAction", "openContainers", "openDoors", "selfWateringFlowerPots",
                 "noElectricalAction"}
        if "easy" in parts and len(parts) > 1:
            raise ValueError("simplification `easy` cannot be combined with other "
                             f"simplifications (got {self.simplification!r})")
        bad = [p for p in parts if p != "easy" and p not in known]
        if bad:
            raise ValueError(f"unknown simplification(s) {bad}; use easy or a comma list of "
                             + ", ".join(sorted(known)))


def sort_listings(text: str) -> str:
    """Sort each run of lines that start with exactly one tab (the simulator's object lists);
    runs holding deeper-indented lines are left as they are."""
    if "\n\t" not in text:
        return text
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("\t"):
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].startswith("\t"):
            j += 1
        run = lines[i:j]
        out += sorted(run) if not any(x.startswith("\t\t") for x in run) else run
        i = j
    return "\n".join(out)


@dataclass
class _Episode:
    task: str
    variation: int
    max_steps: int
    actions: list[str] = field(default_factory=list)
    steps: int = 0
    raw: float = 0.0     # the simulator's current score, -100..100
    score: float = 0.0   # the episode score on [0, 1]
    done: bool = False
    success: bool = False


class SciWorldEnv(TextEnv):
    """ScienceWorld with one JVM per env (started lazily, on the first call that needs it)."""

    name = "sciworld"
    restarts_step_limit = True

    def __init__(self, data_dir: str | None = None, max_steps: int | None = None,
                 simplification: str = "easy", **options: Any):
        names = {f.name for f in fields(SciWorldConfig)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown SciWorldEnv option(s) {unknown}; known: {sorted(names)}")
        self.config = SciWorldConfig(data_dir=data_dir, max_steps=max_steps,
                                     simplification=simplification, **options)
        self.simplification = self.config.simplification
        self.max_steps = int(max_steps) if max_steps else P.DEFAULT_MAX_STEPS
        self._folder = _data_dir(self.config.data_dir) / "sciworld"
        self._sim: Simulator | None = None
        self._ep: _Episode | None = None
        self._splits: dict[str, list[tuple[str, int]]] | None = None
        self._ranges: dict[str, dict[str, list[int]]] | None = None
        self._descriptions: dict[tuple[str, int], str] | None = None
        self._member: dict[tuple[str, int], list[str]] | None = None
        self._limits = (P.read_max_steps(self._folder) if self.config.protocol != "derived"
                        else None) or dict(P.ETO_MAX_STEPS)
        self.gold = GoldCache(self.simplification)

    # -- the JVM -------------------------------------------------------------------------
    @property
    def sim(self) -> Simulator:
        """The simulator, started on first use (and after ``close()``)."""
        if self._sim is None or not self._sim.alive():
            if self._sim is not None:
                self._sim.close()
            self._sim = Simulator(JvmOptions(heap_mb=self.config.heap_mb, java=self.config.java))
        return self._sim

    def _episode_sim(self) -> Simulator:
        """The simulator of the episode in progress; ``SimulatorDiedError`` if its JVM died
        (the episode is lost: reset again, on this env or a new one)."""
        sim = self._sim
        if sim is None or not sim.alive():
            code = sim.proc.poll() if sim is not None else None
            tail = sim.stderr_tail() if sim is not None else ""
            if sim is not None:
                sim.close()
            self._sim, self._ep = None, None
            raise SimulatorDiedError(f"the ScienceWorld JVM died during the episode (exit code "
                                     f"{code}); java stderr: {tail or '(empty)'}")
        return sim

    @property
    def jvm_pid(self) -> int | None:
        return self._sim.pid if self._sim is not None and self._sim.alive() else None

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None
        self._ep = None

    # -- tasks ---------------------------------------------------------------------------
    def variation_ranges(self) -> dict[str, dict[str, list[int]]]:
        """``{task: {"train"|"dev"|"test": [variation ids]}}`` from the simulator (cached)."""
        if self._ranges is None:
            f = sciworld_cache() / "variations.json"
            try:
                got = json.loads(f.read_text(encoding="utf-8"))
                self._ranges = got if isinstance(got, dict) and set(got) == set(P.ALL_TASKS) \
                    else None
            except (OSError, ValueError):  # absent or damaged: ask the simulator again
                self._ranges = None
            if self._ranges is None:
                self._ranges = {t: self.sim.variations(t) for t in P.ALL_TASKS}
                tmp = f.with_suffix(f".tmp{random.getrandbits(32)}")
                tmp.write_text(json.dumps(self._ranges), encoding="utf-8")
                tmp.replace(f)
        return self._ranges

    def protocol_source(self) -> str:
        """``files`` or ``derived``: where this env's splits come from."""
        if self.config.protocol == "files":
            return "files"
        if self.config.protocol == "derived":
            return "derived"
        return "files" if P.read_split_files(self._folder) is not None else "derived"

    def splits(self) -> dict[str, list[tuple[str, int]]]:
        """``{split: [(task, variation), ...]}`` of the protocol."""
        if self._splits is None:
            if self.protocol_source() == "files":
                got = P.read_split_files(self._folder)
                if got is None:
                    raise P.ProtocolError(
                        f"protocol='files' but {self._folder} lacks {{train,dev,test}}"
                        "_indices.json (ETO's eval_agent/data/sciworld files): put them "
                        "there or use protocol='derived'")
                self._splits = got
            else:
                self._splits = P.derive_splits(self.variation_ranges(),
                                               train_cap=self.config.train_cap,
                                               seed=self.config.seed)
        return self._splits

    def task_limit(self, task: str) -> int:
        if self.config.max_steps:
            return int(self.config.max_steps)
        return int(self._limits.get(task, P.DEFAULT_MAX_STEPS))

    def parse_id(self, task_id: str) -> tuple[str, int]:
        """``(task name, variation)`` of a task id; ``UnknownTaskError`` if it names none."""
        m = _ID.match(task_id) if isinstance(task_id, str) else None
        if not m:
            raise UnknownTaskError(f"not a sciworld task id: {task_id!r} "
                                   "(expected sciworld/<task>/<variation>, e.g. sciworld/boil/21)")
        try:
            task = P.canonical_task(m.group(1))
        except P.ProtocolError as e:
            raise UnknownTaskError(f"{task_id!r}: {e}") from None
        v = int(m.group(2))
        n = sum(len(x) for x in self.variation_ranges()[task].values())
        if v >= n:
            raise UnknownTaskError(f"{task_id!r}: {task} has variations 0..{n - 1}")
        return task, v

    @staticmethod
    def task_id(task: str, variation: int) -> str:
        return f"sciworld/{P.canonical_task(task)}/{int(variation)}"

    def _load_descriptions(self) -> dict[tuple[str, int], str]:
        if self._descriptions is None:
            self._descriptions = {}
            f = sciworld_cache() / "descriptions.jsonl"
            if f.exists():
                for line in f.read_text(encoding="utf-8").split("\n"):
                    try:
                        d = json.loads(line)
                        self._descriptions[(d["task"], int(d["variation"]))] = d["description"]
                    except (ValueError, KeyError, TypeError):
                        continue
        return self._descriptions

    def describe(self, pairs: Sequence[tuple[str, int]], progress: bool = True) -> list[str]:
        """Task descriptions (loads each variation once, ~50 ms, then cached on disk).  An
        episode in progress is restored afterwards by replaying its actions."""
        desc = self._load_descriptions()
        todo = [p for p in dict.fromkeys(pairs) if p not in desc]
        if todo:
            from rich.progress import track
            f = sciworld_cache() / "descriptions.jsonl"
            with self._side_load(), open(f, "a", encoding="utf-8") as out:
                for t, v in track(todo, description="ScienceWorld task descriptions",
                                  disable=not progress or len(todo) < 50, transient=True):
                    self.sim.load(t, v, self._simplification_for(t))
                    desc[(t, v)] = self.sim.description()
                    out.write(json.dumps({"task": t, "variation": v,
                                          "description": desc[(t, v)]}) + "\n")
                    out.flush()
        return [desc[p] for p in pairs]

    def _remember_description(self, task: str, var: int, desc: str) -> None:
        self._load_descriptions()[(task, var)] = desc
        with open(sciworld_cache() / "descriptions.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps({"task": task, "variation": var, "description": desc}) + "\n")

    def _make_task(self, t: str, v: int, split: str | None, instruction: str,
                   splits: list[str]) -> Task:
        meta = P.task_meta(t, v, self.task_limit(t))
        meta["splits"] = splits
        return Task(self.task_id(t, v), self.name, split, instruction, meta)

    def _membership(self) -> dict[tuple[str, int], list[str]]:
        if self._member is None:
            self._member = {}
            for s in P.SPLITS:
                for p in self.splits()[s]:
                    self._member.setdefault(p, []).append(s)
        return self._member

    def tasks(self, split: Split = "all", describe: bool | None = None) -> list[Task]:
        """Tasks of a protocol split, or ``all``: every variation of the 30 task types (7,207).

        A task's instruction is ScienceWorld's task description of its variation; getting one
        means loading the variation (~70 ms), done once and cached on disk.  ``describe``
        (default: true for train / dev / test, false for ``all``) loads the missing ones; when
        false, a task whose description is not cached yet gets the placeholder
        ``"<task title> (variation N)"`` (``meta["described"] = False``) and its real
        description is cached at its first ``reset``."""
        if split not in ("train", "dev", "test", "all"):
            raise ValueError(f"sciworld has splits train | dev | test | all, not {split!r}")
        member = self._membership()
        if split == "all":
            pairs = [(t, v) for t in P.ALL_TASKS
                     for v in sorted(v for r in self.variation_ranges()[t].values() for v in r)]
        else:
            pairs = list(self.splits()[split])
        if describe if describe is not None else split != "all":
            self.describe(pairs)
        known = self._load_descriptions()
        out = []
        for t, v in pairs:
            splits = member.get((t, v), [])
            task = self._make_task(t, v, split if split != "all" else (splits or [None])[0],
                                   known.get((t, v)) or P.placeholder(t, v), splits)
            task.meta["described"] = (t, v) in known
            out.append(task)
        return out

    def task(self, task_id: str) -> Task:
        t, v = self.parse_id(task_id)
        splits = self._membership().get((t, v), [])
        task = self._make_task(t, v, splits[0] if splits else None,
                               self.describe([(t, v)])[0], splits)
        task.meta["described"] = True
        return task

    # -- episode -------------------------------------------------------------------------
    def _simplification_for(self, task: str) -> str:
        s = self.simplification
        if s != "easy" and any(k in task for k in _ELECTRICAL):
            # the electrical tasks need `connect` actions (`easy` drops this one by itself)
            s = ",".join(p for p in s.split(",") if p != "noElectricalAction")
        return s

    def reset(self, task_id: str) -> Observation:
        task, var = self.parse_id(task_id)
        self._ep = None
        self.sim.load(task, var, self._simplification_for(task))
        look, _, _, _ = self.sim.step("look around")
        if self.config.sort_listings:
            look = sort_listings(look)
        desc = self.sim.description()
        if (task, var) not in self._load_descriptions():
            self._remember_description(task, var, desc)
        self._ep = _Episode(task, var, self.task_limit(task))
        self.max_steps = self._ep.max_steps
        return f"{desc}\n\n{look}" if self.config.initial_look else desc

    @property
    def episode(self) -> _Episode:
        if self._ep is None:
            raise EpisodeNotStartedError("call reset(task_id) before step()")
        return self._ep

    def step(self, action: str) -> StepResult:
        ep = self.episode
        if ep.done:
            return self._result(f"The episode is over. {NO_ACTION}", False, 0.0)
        ep.steps += 1
        action = action if isinstance(action, str) else ""
        ep.actions.append(action)
        # lone surrogates cannot cross py4j; NUL and other controls are whitespace to us
        clean = action.encode("utf-8", "replace").decode("utf-8")
        clean = " ".join("".join(c if c.isprintable() else " " for c in clean).split())
        if not clean or len(clean) > MAX_ACTION_CHARS or clean.lower() in BLOCKED_ACTIONS:
            obs, valid, raw = NO_ACTION, False, ep.raw
            completed = False
        else:
            try:
                obs, frac, completed, _ = self._episode_sim().step(clean)
            except SimulatorDiedError:
                self._ep = None
                raise
            if self.config.sort_listings:
                obs = sort_listings(obs)
            raw = round(100 * frac)
            valid = obs.strip() != NO_ACTION
        before = ep.score
        ep.raw = raw
        now = max(raw, 0) / 100.0
        ep.score = max(ep.score, now) if self.config.score == "max" else now
        ep.success = ep.success or raw >= 100
        if completed or raw < 0 or raw >= 100 or ep.steps >= ep.max_steps:
            ep.done = True
        return self._result(obs, valid, round(ep.score - before, 6))

    def _result(self, obs: str, valid: bool, reward: float) -> StepResult:
        ep = self.episode
        info: dict[str, Any] = {"valid": valid, "score": ep.score, "raw_score": ep.raw,
                                "steps": ep.steps}
        if ep.done:
            info["success"] = ep.success
            info["failed"] = ep.raw < 0
            info["truncated"] = not ep.success and ep.raw >= 0 and ep.steps >= ep.max_steps
        return StepResult(obs, float(reward), ep.done, info)

    def restart_step_limit(self) -> None:
        ep = self.episode
        ep.max_steps = ep.steps + self.task_limit(ep.task)
        self.max_steps = ep.max_steps

    def available_actions(self) -> list[str]:
        """Every valid action-object combination of the current state (slow: 0.1-0.5 s)."""
        self.episode
        return self._episode_sim().valid_actions()

    def objects(self) -> list[str]:
        """Names of the objects the agent can refer to now (one fast call)."""
        self.episode
        return self._episode_sim().possible_objects()

    # -- gold paths ----------------------------------------------------------------------
    def gold_actions(self, task_id: str) -> list[str]:
        """The simulator's gold action sequence of a task (cached on disk).  Generating it
        reloads the simulator; an episode in progress is then restored by replaying its
        actions (``replay``'s caveats apply)."""
        task, var = self.parse_id(task_id)
        got = self.gold.get(task, var)
        if got is None:
            with self._side_load():
                got = self.gold.generate(_SimFor(self), task, var)
        return got

    @contextlib.contextmanager
    def _side_load(self) -> Iterator[None]:
        """Load other variations on this env's JVM, then restore the episode in progress (by
        replaying its actions)."""
        ep, self._ep = self._ep, None
        try:
            yield
        finally:
            if ep is not None:
                self.reset(self.task_id(ep.task, ep.variation))
                for a in ep.actions:
                    self.step(a)

    def replay(self, task_id: str, actions: Sequence[str],
               expected: Sequence[str] | None = None,
               retries: int | None = None) -> ReplayResult:
        """Reset and re-apply ``actions`` (~5-20 ms each).  ScienceWorld is not deterministic
        (object order in descriptions, temperatures, bee pollination; no seed), so ``match``
        says how close the replay came: ``exact``, ``unordered`` (same lines in another order)
        or ``different``; ``results[i].info["raw_score"]`` tells whether the scores agree.

        A ``different`` replay is tried again on a fresh load up to ``retries`` times (default
        ``config.replay_retries``); the first attempt that is not ``different`` (else the last)
        is returned, with ``attempts`` set on the result.  docs/sciworld.md says what EEF
        does with a replay that stays ``different``."""
        retries = self.config.replay_retries if retries is None else int(retries)
        for attempt in range(1 + (max(0, retries) if expected is not None else 0)):
            rep = super().replay(task_id, actions, expected)
            if rep.match != "different":
                break
        rep.attempts = attempt + 1
        return rep  # the env is in the state of the returned (last) attempt

    @property
    def version(self) -> str:
        return scienceworld.__version__


class _SimFor:
    """The env's simulator, loading with the env's simplification of each task (GoldCache)."""

    def __init__(self, env: SciWorldEnv):
        self.env = env

    def load(self, task: str, variation: int, simplification: str, gold: bool = False) -> None:
        self.env.sim.load(task, variation, self.env._simplification_for(task), gold=gold)

    def gold_actions(self) -> list[str]:
        return self.env.sim.gold_actions()


def available(java: str | None = None) -> bool:
    """True when a Java runtime for ScienceWorld is present."""
    from eef.envs.sciworld.jvm import find_java
    try:
        find_java(java)
        return True
    except EnvError:
        return False


__all__ = ["SciWorldEnv", "SciWorldConfig", "NO_ACTION", "available"]
