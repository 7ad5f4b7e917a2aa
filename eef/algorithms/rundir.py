"""The run directory: resolved config, stages that resume, metrics.

Layout::

    RUN_DIR/config.yaml          the resolved config
    RUN_DIR/metrics.jsonl        one line per evaluation / stage summary (appended)
    RUN_DIR/stages/NAME.json     a finished stage: its input key and its outputs' checksums
    RUN_DIR/...                  each stage's outputs (expert.jsonl, models/..., rollouts/...)

A stage is reused only when its record exists, its input key (a hash of the config values and
upstream outputs it depends on) is the same, and every output it recorded still has the same
checksum: a file merely existing is not enough.  A model in a key is named by the checksum
of its weights (``model_key``), so the same weights under another name share work.  Work
inside a stage resumes on its own (rollouts append to JSONL and skip finished episodes;
training resumes from its checkpoints).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from eef.memory import allocator, release


class RunDirError(RuntimeError):
    pass


def digest(obj: Any) -> str:
    """The key of a JSON-able value (stage input keys): its canonical JSON's sha256."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def path_digest(p: Path) -> str:
    """Checksum of a file, or of a directory's files (names + contents, checkpoints excluded)."""
    h = hashlib.sha256()
    if p.is_file():
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]
    if p.is_dir():
        for q in sorted(p.rglob("*")):
            if q.is_file() and "checkpoint" not in q.parts and not q.name.endswith(".log"):
                h.update(str(q.relative_to(p)).encode())
                h.update(path_digest(q).encode())
        return h.hexdigest()[:16]
    raise RunDirError(f"stage output {p} is missing")


#: (path, size, mtime, inode) -> checksum of a model's weights file, hashed once per process
_WEIGHTS_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def model_key(p: str | os.PathLike) -> str:
    """What identifies a model directory in stage keys: the checksum (``path_digest``) of its
    weights, named after the file: the LoRA adapter when there is one (a retrained adapter is
    never taken for the old one), else ``model.safetensors``, else every ``*.safetensors``
    shard; a name that is no local directory (a hub id) stands for itself.  A weights file is
    hashed once per process while its size, time and inode stay the same."""
    p = Path(p)
    files = next(([p / n] for n in ("adapter_model.safetensors", "model.safetensors")
                  if (p / n).is_file()), None)
    if files is None:
        files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if not files:
        return str(p)
    sums = []
    for f in files:
        st = f.stat()
        memo = (str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
        if memo not in _WEIGHTS_DIGESTS:
            _WEIGHTS_DIGESTS[memo] = path_digest(f)
        sums.append(_WEIGHTS_DIGESTS[memo])
    return f"{files[0].name}-{sums[0]}" if len(files) == 1 else f"shards-{digest(sums)}"


def current_rows(rows: Iterable[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """The current row of every stage among metrics rows in the order they were logged: the
    last one (a stage rerun with other inputs appends a newer row; older ones are history).
    Stages keep the order in which they first logged."""
    last: dict[Any, dict[str, Any]] = {}
    for r in rows:
        last[r.get("stage")] = r
    return last


def _copy(src: Path, dst: Path) -> None:
    """Copy a stage output (file or directory; times kept) via a temporary name."""
    import shutil
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".copy")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoint*"))
        if dst.is_dir():
            shutil.rmtree(dst)
    else:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class RunDir:
    def __init__(self, path: str | os.PathLike, config: dict[str, Any]):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "stages").mkdir(exist_ok=True)
        cfg_path = self.path / "config.yaml"
        text = yaml.safe_dump(config, sort_keys=False)
        if cfg_path.exists() and yaml.safe_load(cfg_path.read_text()) != config:
            old = self.path / f"config.{int(time.time())}.yaml"
            cfg_path.rename(old)  # keep the old one; stages re-check their own inputs
        cfg_path.write_text(text)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def _record(self, name: str) -> Path:
        return self.path / "stages" / f"{name.replace('/', '__')}.json"

    def _started(self, name: str) -> Path:
        """The marker holding the input key of a stage that is running or was killed."""
        return self._record(name).with_suffix(".started")

    def done(self, name: str, key: str) -> dict[str, Any] | None:
        """The stage's record if it finished with this input key and intact outputs."""
        rec_path = self._record(name)
        if not rec_path.exists():
            return None
        try:
            rec = json.loads(rec_path.read_text())
        except json.JSONDecodeError:
            return None
        if rec.get("key") != key:
            return None
        try:
            for rel, d in rec.get("outputs", {}).items():
                if path_digest(self.path / rel) != d:
                    return None
        except RunDirError:
            return None
        return rec

    def find_done(self, prefix: str, key: str) -> dict[str, Any] | None:
        """A finished stage whose name starts with ``prefix`` and whose input key is ``key``
        (outputs intact), else None: the same work done under another name."""
        for rec_path in sorted((self.path / "stages").glob("*.json")):
            try:
                name = json.loads(rec_path.read_text()).get("stage", "")
            except json.JSONDecodeError:
                continue
            if str(name).startswith(prefix):
                rec = self.done(name, key)
                if rec is not None:
                    return rec
        return None

    def stage(self, name: str, key_obj: Any, outputs: list[str],
              fn: Callable[[], dict[str, Any] | None], share: str | None = None
              ) -> dict[str, Any]:
        """Run ``fn`` unless the stage is done with the same inputs; record its outputs.
        ``share``: when a finished stage whose name starts with it had the same input key and
        the same number of outputs, copy its outputs instead of running ``fn``."""
        key = digest(key_obj)
        rec = self.done(name, key)
        if rec is not None:
            return rec.get("result") or {}
        self._set_aside(name, key, outputs)
        started = self._started(name)
        started.write_text(key)
        t0 = time.time()
        same = self.find_done(share, key) if share else None
        mem = None
        if same is not None and len(same.get("outputs", {})) == len(outputs):
            for src, dst in zip(same["outputs"], outputs):
                _copy(self.path / src, self.path / dst)
            result = {**(same.get("result") or {}), "copied_from": same["stage"]}
        else:
            result = fn() or {}
            # the stage's tensors are garbage now: give their pages back before the next
            # stage (glibc keeps them otherwise: docs/models.md, "Training memory")
            mem = release()
        rec = {"stage": name, "key": key, "seconds": round(time.time() - t0, 2),
               "outputs": {rel: path_digest(self.path / rel) for rel in outputs},
               "result": result}
        if mem is not None:
            rec["rss_mb"] = mem
            rec["allocator"] = allocator()
        tmp = self._record(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=1, default=str))
        os.replace(tmp, self._record(name))
        started.unlink(missing_ok=True)
        return result

    def _set_aside(self, name: str, key: str, outputs: list[str]) -> None:
        """Outputs left by the stage under other inputs (a finished or killed run of it with
        another key, e.g. a changed temperature) are renamed ``<output>.stale-<old key>``, so
        that resuming never mixes their episodes or checkpoints into this run; a killed run
        with the same key is resumed.  Outputs without any record (run dirs older than the
        ``.started`` markers) are kept as they are."""
        import shutil
        started = self._started(name)
        old = started.read_text().strip() if started.exists() else None
        if old is None and self._record(name).exists():
            try:
                old = json.loads(self._record(name).read_text()).get("key")
            except json.JSONDecodeError:
                old = None
        if old is None or old == key:
            return
        for rel in outputs:
            p = self.path / rel
            if p.exists():
                dst = p.with_name(f"{p.name}.stale-{old}")
                if dst.is_dir():
                    shutil.rmtree(dst)
                os.replace(p, dst)

    def output_key(self, rel: str) -> str:
        return path_digest(self.path / rel)

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append a metrics row unless it is already the stage's current row: the same key
        (rows of keyed stages), or the same values (rows without a key, such as budgets).  A
        stage rerun with other inputs appends its new row; ``metrics`` returns the last."""
        line = json.dumps(row, default=str)
        cur = self._current().get(row.get("stage"))
        if cur is not None and (cur.get("key") == row.get("key") if "key" in row
                                else cur == json.loads(line)):
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(line + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """The current row of every stage: the last one logged (a stage rerun with other
        inputs, e.g. after a config change, appended a newer row; the older ones stay in the
        file as history).  Stages in the order they first logged."""
        return list(self._current().values())

    def _current(self) -> dict[Any, dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return {}
        rows = []
        for line in p.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a half-written last line from a killed run
            if isinstance(r, dict):
                rows.append(r)
        return current_rows(rows)
