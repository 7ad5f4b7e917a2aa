"""One ScienceWorld simulator in its own JVM, driven over py4j with as few calls as possible.

``scienceworld.ScienceWorldEnv.step`` costs ~500 ms because it lists every valid
action-object combination (400-8,000 strings, one py4j call each) to fill its ``info``; the
simulator itself needs ~12 ms.  ``Simulator`` talks to the same Scala ``PythonInterface`` but
asks only for the observation, the score and the completion flag.

Process hygiene: the JVM is started with py4j's ``--die-on-broken-pipe``, so it exits when the
Python process dies (even on SIGKILL: its stdin closes); ``close()`` shuts the gateway down and
then terminates / kills the process.  A dead JVM surfaces as ``SimulatorDiedError``.
"""

from __future__ import annotations

import collections
import gc
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from eef.envs.base import EnvDiedError, EnvError

T = TypeVar("T")


class JavaNotFoundError(EnvError):
    """No Java runtime: ScienceWorld's simulator runs on the JVM."""


class SimulatorDiedError(EnvDiedError):
    """The ScienceWorld JVM died or stopped answering.  The env that raised is unusable (its JVM
    has been reaped); create a new env and retry the episode."""


@dataclass
class JvmOptions:
    """How the simulator's JVM is started."""

    heap_mb: int = field(default=512, metadata={
        "help": "Maximum Java heap (-Xmx) in MiB.  512 keeps one env at ~0.3-0.5 GB RSS; the "
                "JVM default (1/4 of RAM) lets one env grow to 2.7 GB."})
    serial_gc: bool = field(default=True, metadata={
        "help": "Use the serial garbage collector (-XX:+UseSerialGC): fewer GC threads and "
                "less memory on small machines, no step-time loss measured."})
    extra: tuple[str, ...] = field(default=(
        "-XX:ReservedCodeCacheSize=64m", "-XX:MaxMetaspaceSize=128m", "-Xss1m",
        "-XX:CICompilerCount=2"), metadata={
        "help": "Further JVM options.  Do not add -XX:TieredStopAtLevel=1: it makes steps "
                "2.4x slower."})
    java: str | None = field(default=None, metadata={
        "help": "Path of the java executable (default: $JAVA_HOME/bin/java, else `java` on "
                "PATH)."})

    timeout_s: float = field(default=600.0, metadata={
        "help": "Seconds one simulator call may take before the JVM is declared hung (gold-path "
                "generation on mendelian-genetics takes up to ~60 s)."})

    def args(self) -> list[str]:
        a = [f"-Xmx{int(self.heap_mb)}m", "-Xms32m"]
        if self.serial_gc:
            a.append("-XX:+UseSerialGC")
        return a + list(self.extra)


def find_java(explicit: str | None = None) -> str:
    """The java executable, or ``JavaNotFoundError`` saying what to install."""
    candidates = [explicit] if explicit else []
    if not explicit and os.environ.get("JAVA_HOME"):
        candidates.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    if not explicit:
        candidates.append(shutil.which("java") or "")
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise JavaNotFoundError(
        "ScienceWorld needs a Java runtime (17 or newer) and none was found"
        + (f" at {explicit!r}" if explicit else " (JAVA_HOME unset, no `java` on PATH)")
        + ": install one, e.g. `apt-get install openjdk-17-jre-headless`.")


class Simulator:
    """A lean handle on one ScienceWorld JVM.  Not thread-safe: one caller at a time."""

    def __init__(self, options: JvmOptions | None = None):
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH

        self.options = options or JvmOptions()
        java = find_java(self.options.java)
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._closed = False
        try:
            port, proc = launch_gateway(
                classpath=JAR_PATH, javaopts=self.options.args(), die_on_exit=True,
                redirect_stderr=self._stderr, java_path=java, cwd=BASEPATH, return_proc=True)
        except (OSError, ValueError) as e:  # ValueError: the JVM printed no port (bad option)
            raise SimulatorDiedError(f"could not start the ScienceWorld JVM ({e}); "
                                     f"java stderr: {self.stderr_tail()}") from e
        self.proc: subprocess.Popen = proc
        self._gateway = JavaGateway(
            gateway_parameters=GatewayParameters(port=port, auto_field=True, auto_close=True,
                                                 read_timeout=self.options.timeout_s),
            java_process=proc)
        self.server = self.call(lambda: self._gateway.jvm.scienceworld.runtime.pythonapi
                                .PythonInterface())

    # -- calls ---------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return not self._closed and self.proc.poll() is None

    def stderr_tail(self, n: int = 5) -> str:
        lines = [s.rstrip() for s in list(self._stderr)
                 if s.strip() and not s.startswith("Picked up JAVA_TOOL_OPTIONS")]
        return " | ".join(lines[-n:]) or "(empty)"

    def call(self, fn: Callable[[], T]) -> T:
        """Run one py4j interaction; a dead JVM becomes ``SimulatorDiedError`` (and is reaped)."""
        from py4j.protocol import Py4JError, Py4JNetworkError

        if self._closed:
            raise SimulatorDiedError("the ScienceWorld simulator was closed; create a new env")
        try:
            with self._lock:
                return fn()
        except Py4JNetworkError as e:
            self._die(e)
        except Py4JError as e:
            if self.proc.poll() is not None:
                self._die(e)
            raise
        raise AssertionError("unreachable")

    def _die(self, e: BaseException) -> None:
        code = self.proc.poll()
        self.close()
        raise SimulatorDiedError(
            f"the ScienceWorld JVM (pid {self.proc.pid}) died or stopped answering"
            f" (exit code {code}; {type(e).__name__}); java stderr: {self.stderr_tail()}") from e

    # -- simulator API (the subset eef needs) --------------------------------------------
    def task_names(self) -> list[str]:
        return list(self.call(lambda: self.server.getTaskNames()))

    def load(self, task: str, variation: int, simplification: str, gold: bool = False) -> None:
        self.call(lambda: self.server.load(task, int(variation), simplification, bool(gold)))
        if gold:
            # The flag is sticky: every later reset() would regenerate the gold path (up to 60 s).
            self.call(lambda: getattr(self.server, "goldPathGenerationEnabled_$eq")(False))

    def gold_actions(self) -> list[str]:
        return list(self.call(lambda: self.server.getGoldActionSequence()))

    def variations(self, task: str) -> dict[str, list[int]]:
        """Train / dev / test variation ids of a task (loads variation 0 first)."""
        def run() -> dict[str, list[int]]:
            self.server.load(task, 0, "", False)
            return {"train": list(self.server.getVariationsTrain()),
                    "dev": list(self.server.getVariationsDev()),
                    "test": list(self.server.getVariationsTest())}
        return self.call(run)

    def description(self) -> str:
        return str(self.call(lambda: self.server.getTaskDescription()))

    def step(self, action: str) -> tuple[str, float, bool, int]:
        """``(observation, score in [-1, 1], completed, moves)`` in one locked round of calls."""
        def run() -> tuple[str, float, bool, int]:
            obs = self.server.step(action)
            return (str(obs), float(self.server.getScore()), bool(self.server.getCompleted()),
                    int(self.server.getNumMoves()))
        return self.call(run)

    def look(self) -> str:
        return str(self.call(lambda: self.server.freeActionLook()))

    def inventory(self) -> str:
        return str(self.call(lambda: self.server.freeActionInventory()))

    def valid_actions(self) -> list[str]:
        """Every valid action-object combination (slow: 100-500 ms; only when asked)."""
        return [str(a) for a in self.call(lambda: self.server.getValidActionObjectCombinations())]

    def possible_objects(self) -> list[str]:
        return [str(a) for a in self.call(lambda: self.server.getPossibleObjects())]

    def simplifications(self) -> list[str]:
        return str(self.call(lambda: self.server.getPossibleSimplifications())).split(", ")

    def raw(self, name: str, *args: Any) -> Any:
        """Call any other ``PythonInterface`` method by name."""
        return self.call(lambda: getattr(self.server, name)(*args))

    # -- shutdown ------------------------------------------------------------------------
    def close(self, collect: bool = True) -> None:
        """Shut the gateway down and make sure the JVM is gone.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.poll() is None:
                self._gateway.shutdown()
        except Exception:  # the JVM may already be gone; we kill it below anyway
            pass
        try:
            self._gateway.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for s in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass
        # py4j proxies finalise by messaging their gateway: let them go now, not at a random
        # later garbage collection
        self.server = None
        if collect:
            gc.collect()

    def __del__(self) -> None:
        try:
            self.close(collect=False)
        except Exception:
            pass
