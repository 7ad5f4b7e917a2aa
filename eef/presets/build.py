"""Build and cache a pre-trained preset: ``build_preset("tiny", "webshop")``.

A build initialises the preset (``eef.presets.model``), writes the env curriculum's corpus
and trains on it with ``eef.models.train.train_sft`` (loss on action tokens only): a warm-up
phase on the short drills, then the main phase, then, with ``copy_drills``, a phase of span-copy
drills on top of the build without them.

Cache.  A build lives under ``<cache dir>/presets/<preset>-<env>-<key>``, the key hashing the
preset, the env, the checksums of the data files, every option and ``CODE_VERSION``.  It runs
in ``<dir>.tmp`` (corpus, initial weights, checkpoints: a killed build resumes there) and is
renamed into place when done.  The warm-up phase is also kept under
``<cache dir>/presets/warmup/`` (keyed by its initial weights, corpus and options), so builds
that differ only in their main phase share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from eef.presets.base import BuildInterrupted, Curriculum, DataDir, PretrainConfig, PretrainError
from eef.presets.curricula import CURRICULA
from eef.presets.model import INFO_FILE, get_preset, init_preset
from eef.trajectory import Trajectory, iter_jsonl, write_jsonl

#: bump when the corpus or the training recipe changes: cached presets are rebuilt
CODE_VERSION = "4"


def _curriculum(env: str, hint: str = "") -> Curriculum:
    if env not in CURRICULA:
        raise PretrainError(f"no pre-training corpus for env {env!r} (known: "
                            f"{', '.join(CURRICULA)}){hint}")
    return CURRICULA[env]


def data_checksums(env: str, data_dir: DataDir = None) -> dict[str, str]:
    """sha256 of each data file the env's corpus reads (``DataNotFoundError`` if missing)."""
    from eef.paths import DataNotFoundError, data_dir as _dd
    root = Path(_dd(data_dir)) / env
    out = {}
    cur = CURRICULA.get(env)
    for names in cur.data_files if cur else ():
        path = next((root / n for n in names if (root / n).exists()), None)
        if path is None:
            raise DataNotFoundError(f"{root / names[0]} not found: get the {env} data first "
                                    f"(eef data download {env}) or set EEF_DATA_DIR")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[path.name] = h.hexdigest()
    return out


def replay_sequences(env: str, options: dict[str, Any], n: int, seed: int = 0,
                     data_dir: DataDir = None) -> list[Trajectory]:
    """``n`` sequences of the pre-training corpus of a preset built with ``options`` (a seeded
    sample of its main-phase tasks; the warm-up's short drills left out), for mixing into
    fine-tuning data against forgetting (``model.replay`` of the pipeline).  A build with
    ``copy_drills`` adds ``n`` more: fresh copy drills (seeded by ``seed + 1``)."""
    if n <= 0:
        return []
    cur = _curriculum(env)
    cfg = PretrainConfig.from_options(options)
    pool = [t for t in cur.corpus(cfg, data_dir)
            if t.source.extra.get("task") != "lookup_short"]
    if not pool:
        raise PretrainError("the pre-training corpus has no main-phase sequence to replay")
    rng = random.Random(f"replay/{seed}")
    picked = rng.sample(range(len(pool)), min(n, len(pool)))
    out = [pool[i] for i in sorted(picked)]
    if cfg.copy_drills and cur.copy_drills:  # and as many fresh copy drills
        out += cur.copy_drills(data_dir, min(n, cfg.copy_drills), seed + 1)
    return out


#: options added after builds were cached: left out of the key while at their default, so
#: the keys (and caches) of builds that do not use them stay valid
_LATER_OPTIONS = {"search_drills": 0, "copy_drills": 0, "copy_lr": 1e-3}


def _key_options(cfg: PretrainConfig) -> dict[str, Any]:
    opts = asdict(cfg)
    for k, default in _LATER_OPTIONS.items():
        if opts.get(k) == default:
            del opts[k]
    return opts


def build_key(preset: str, env: str, cfg: PretrainConfig,
              data_dir: DataDir = None) -> tuple[str, dict[str, Any]]:
    """The cache key of a build and what it hashes (preset size, env, data checksums, every
    option, ``CODE_VERSION``)."""
    payload = {"preset": preset, "size": asdict(get_preset(preset)), "env": env,
               "data": data_checksums(env, data_dir), "options": _key_options(cfg),
               "code_version": CODE_VERSION}
    cur = CURRICULA.get(env)
    if cur is not None and cur.versions is not None:  # the env's text differs between versions
        payload.update(cur.versions())
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return digest, payload


def preset_dir(preset: str, env: str, key: str) -> Path:
    from eef.paths import cache_dir
    return cache_dir() / "presets" / f"{preset}-{env}-{key}"


def _is_built(path: Path, key: str) -> bool:
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (info.get("pretraining") or {}).get("key") == key


def _corpus_stats(trajs: Sequence[Trajectory]) -> dict[str, Any]:
    kinds: dict[str, dict[str, int]] = {}
    for t in trajs:
        k = kinds.setdefault(t.source.extra.get("task", "?"), {"sequences": 0, "trained_actions": 0,
                                                         "relabelled": 0})
        k["sequences"] += 1
        k["trained_actions"] += sum(s.train for s in t.steps)
        k["relabelled"] += bool(t.source.extra.get("relabelled"))
    return kinds


def build_preset(preset: str, env: str, *, out: str | os.PathLike | None = None,
                 progress: bool = True, data_dir: DataDir = None,
                 stop_after: int | None = None, threads: int | None = None,
                 reuse_warmup: bool = True, **options: Any) -> Path:
    """The pre-trained preset ``preset`` for ``env``: built once, then read from the cache.

    ``options`` are ``PretrainConfig`` fields.  The model goes to ``out`` when given, else to
    ``<cache dir>/presets/<preset>-<env>-<key>``; either way it is built in ``<dir>.tmp``
    (initial weights, corpus, ``train_sft`` checkpoints) and renamed when complete, so a killed
    build resumes on the next call and a finished directory is always whole.  ``stop_after``
    (tests) stops a training phase after that many steps of this call and raises
    ``BuildInterrupted``.  ``threads`` sets torch's CPU threads for the build (on a busy
    2-core machine 1 thread is much faster than 2; see docs/models.md); it is not part of the
    key.  ``reuse_warmup``: take the warm-up phase from the cache when an earlier build ran
    the same one (same initial weights, warm-up corpus and warm-up options; see
    ``warmup_key``), and store it there after running it; False runs it (to time a build).
    Returns the model directory (``hf:<dir>`` loads it).
    """
    cfg = PretrainConfig.from_options(options)
    get_preset(preset)
    cur = _curriculum(env, "; use preset init without pre-training for it")
    key, payload = build_key(preset, env, cfg, data_dir)
    final = Path(out) if out is not None else preset_dir(preset, env, key)
    if _is_built(final, key):
        return final
    if final.exists():
        raise PretrainError(f"{final} exists but is not this build (other options, data or "
                            "code version): remove it or choose another output directory")
    base = None
    if cfg.copy_drills and cur.copy_drills is None:
        raise PretrainError(f"env {env!r} has no copy drills (copy_drills are WebShop drills)")
    if cfg.copy_drills:  # the build without copy drills (cached), then their own phase
        base = build_preset(preset, env, progress=progress, data_dir=data_dir,
                            stop_after=stop_after, threads=threads, reuse_warmup=reuse_warmup,
                            **{**asdict(cfg), "copy_drills": 0,
                               "copy_lr": _LATER_OPTIONS["copy_lr"]})
    work = final.with_name(final.name + ".tmp")
    work.mkdir(parents=True, exist_ok=True)
    import torch
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if base is not None:
            _build_copy(base, env, cfg, key, payload, final, work, progress, data_dir,
                        stop_after)
        else:
            _build(preset, env, cfg, key, payload, final, work, progress, data_dir,
                   stop_after, reuse_warmup)
    finally:
        torch.set_num_threads(old_threads)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _stamp(work: Path, key: str, payload: dict[str, Any]) -> None:
    """Mark ``work`` as the directory of build ``key`` (leftovers of another build go)."""
    stamp = work / "key.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") != key:
        shutil.rmtree(work)  # leftovers of a different build with the same output
        work.mkdir(parents=True)
    stamp.write_text(json.dumps({"key": key, **payload}, indent=2))


def _build(preset: str, env: str, cfg: PretrainConfig, key: str, payload: dict[str, Any],
           final: Path, work: Path, progress: bool, data_dir: DataDir,
           stop_after: int | None, reuse_warmup: bool = True) -> None:
    with _Lock(work / "lock"):
        if _is_built(final, key):  # another process finished it while we waited
            return
        _stamp(work, key, payload)
        t0 = time.time()
        init = work / "init"
        if not (init / "config.json").exists():
            tmp = work / "init.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            init_preset(preset, env, tmp, seed=cfg.seed, data_dir=data_dir)
            tmp.rename(init)
        corpus = work / "corpus.jsonl"
        if not corpus.exists():
            tmp = work / "corpus.jsonl.tmp"
            write_jsonl(tmp, _progress(CURRICULA[env].corpus(cfg, data_dir),
                                       cfg.short_drills + cfg.lookup_drills
                                       + cfg.explore_episodes
                                       + cfg.pick_tasks,
                                       f"{preset}/{env} corpus", progress))
            tmp.rename(corpus)
        trajs = list(iter_jsonl(corpus))
        short = [t for t in trajs if t.source.extra.get("short")]
        main = [t for t in trajs if not t.source.extra.get("short")] + short[:cfg.short_replay]
        # the warm-up keeps its learning rate: copying forms late and abruptly (docs)
        phases = [("warmup", short, cfg.warmup_steps, "constant", cfg.warmup_batch_size)] \
            if cfg.warmup_steps else []
        phases.append(("model", main, cfg.steps, "cosine", cfg.batch_size))
        start, results, reused = init, [], False
        for name, data, steps, schedule, batch in phases:
            shared = None
            if name == "warmup" and reuse_warmup:
                shared = warmup_dir(preset, env, warmup_key(payload, cfg, data))
                reused = _take_phase(shared, work / name)
            res = train_pretrain(start, data, work / name, cfg, steps=steps, schedule=schedule,
                                 batch_size=batch, progress=progress, stop_after=stop_after)
            results.append(res)
            if res["steps"] < res["total_steps"]:
                raise BuildInterrupted(f"build of {final} stopped at step {res['steps']} of "
                                       f"{res['total_steps']} ({name}); call again to resume")
            if shared is not None and not reused:
                _keep_phase(work / name, shared)
            start = work / name
        info = json.loads((init / INFO_FILE).read_text())
        info["weights"] = "self-supervised pre-training (eef.presets)"
        info["pretraining"] = {
            "key": key, "code_version": CODE_VERSION, "options": asdict(cfg),
            "data": payload["data"], "corpus": _corpus_stats(trajs),
            "what": ("short and page-shaped lookup drills (hits with random train-product "
                     "identifiers, the thought looks named hits up by a title word), "
                     "random-exploration transcripts on train goals (purchase step and score "
                     "removed) and copy tasks on catalogue pages (click the listed train "
                     "product named by words of its title, then its named option values); no "
                     "expert, no reward, no test product's goal, title or page as a target; "
                     "identifiers are arbitrary labels drawn from the whole catalogue"
                     + ("; search drills: a train goal's instruction, then search[<its product "
                        "phrase's content words>]" if cfg.search_drills else "")),
            "sequences": res["examples"], "warmup_steps": cfg.warmup_steps,
            "warmup_reused": reused,
            "steps": sum(r["steps"] for r in results),
            "tokens": sum(r["tokens"] for r in results),
            "trained_tokens": sum(r["trained_tokens"] for r in results),
            "train_minutes": round(sum(r["seconds"] for r in results) / 60, 2),
            "build_minutes_this_call": round((time.time() - t0) / 60, 2)}
        (work / "model" / INFO_FILE).write_text(json.dumps(info, indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        (work / "model").rename(final)


def copy_train_config(cfg: PretrainConfig) -> Any:
    """Training options of the copy-drill phase: one pass, short windows, constant rate."""
    from eef.models.hparams import TrainConfig
    return TrainConfig(lr=cfg.copy_lr, epochs=1.0, batch_size=cfg.warmup_batch_size,
                       max_tokens=256, weight_decay=0.0, warmup_ratio=0.02,
                       schedule="constant", seed=cfg.seed, save_every=cfg.save_every)


def _build_copy(base: Path, env: str, cfg: PretrainConfig, key: str, payload: dict[str, Any],
                final: Path, work: Path, progress: bool, data_dir: DataDir,
                stop_after: int | None) -> None:
    """The copy-drill phase on top of the finished build ``base`` (see ``copy_drills``)."""
    with _Lock(work / "lock"):
        if _is_built(final, key):
            return
        _stamp(work, key, payload)
        t0 = time.time()
        drills = list(CURRICULA[env].copy_drills(data_dir, cfg.copy_drills, cfg.seed))
        res = train_pretrain(base, drills, work / "copy", cfg, steps=0,
                             train_cfg=copy_train_config(cfg), progress=progress,
                             stop_after=stop_after)
        if res["steps"] < res["total_steps"]:
            raise BuildInterrupted(f"build of {final} stopped at step {res['steps']} of "
                                   f"{res['total_steps']} (copy drills); call again to resume")
        info = json.loads((base / INFO_FILE).read_text())
        pre = info["pretraining"]
        pre.update({
            "key": key, "options": asdict(cfg), "base": base.name,
            "what": pre["what"] + ("; then span-copy drills: 'Find me <words of train "
                                   "product titles>', then search[find me <the same words>]"),
            "copy_phase": {"sequences": res["examples"], "steps": res["steps"],
                           "tokens": res["tokens"], "trained_tokens": res["trained_tokens"],
                           "train_minutes": round(res["seconds"] / 60, 2)},
            "steps": pre["steps"] + res["steps"], "tokens": pre["tokens"] + res["tokens"],
            "trained_tokens": pre["trained_tokens"] + res["trained_tokens"],
            "train_minutes": round(pre["train_minutes"] + res["seconds"] / 60, 2),
            "build_minutes_this_call": round((time.time() - t0) / 60, 2)})
        pre["corpus"]["copy"] = {"sequences": len(drills), "trained_actions": len(drills),
                                 "relabelled": 0}
        (work / "copy" / INFO_FILE).write_text(json.dumps(info, indent=2))
        final.parent.mkdir(parents=True, exist_ok=True)
        (work / "copy").rename(final)


def warmup_key(payload: dict[str, Any], cfg: PretrainConfig, data: Sequence[Trajectory]
               ) -> str:
    """Key of a warm-up phase: what fixes its result (preset, env, data files, code version,
    seed of the initial weights and data order, the warm-up's training options) and the
    content of its corpus.  Builds that differ only in their main phase share it."""
    h = hashlib.sha256(json.dumps(
        {k: payload.get(k) for k in ("preset", "size", "env", "data", "simulator",
                                     "code_version")}
        | {"seed": cfg.seed, "lr": cfg.lr, "max_tokens": cfg.max_tokens,
           "steps": cfg.warmup_steps, "batch_size": cfg.warmup_batch_size},
        sort_keys=True).encode())
    for t in data:
        h.update(json.dumps(t.to_dict(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def warmup_dir(preset: str, env: str, key: str) -> Path:
    from eef.paths import cache_dir
    return cache_dir() / "presets" / "warmup" / f"{preset}-{env}-{key}"


def _take_phase(shared: Path, dst: Path) -> bool:
    """Copy a finished phase from the cache into the build (True when there was one)."""
    if (dst / "eef_phase.json").exists() or not (shared / "eef_phase.json").exists():
        return False
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(shared, dst)
    return True


def _keep_phase(src: Path, shared: Path) -> None:
    """Store a finished phase (without its resume checkpoint) in the cache."""
    if (shared / "eef_phase.json").exists() or not (src / "eef_phase.json").exists():
        return
    tmp = shared.with_name(shared.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("checkpoint*"))
    try:
        tmp.rename(shared)
    except OSError:  # another build stored it first
        shutil.rmtree(tmp, ignore_errors=True)


def pretrain_train_config(cfg: PretrainConfig, steps: int, schedule: str = "cosine",
                          batch_size: int | None = None) -> Any:
    from eef.models.hparams import TrainConfig
    return TrainConfig(lr=cfg.lr, epochs=1.0, max_steps=steps,
                       batch_size=batch_size or cfg.batch_size,
                       max_tokens=cfg.max_tokens, weight_decay=0.0, warmup_ratio=0.03,
                       schedule=schedule, seed=cfg.seed, save_every=cfg.save_every)


def train_pretrain(init: Path, trajs: Sequence[Trajectory], out: Path, cfg: PretrainConfig, *,
                   steps: int, schedule: str = "cosine", batch_size: int | None = None,
                   progress: bool = True, stop_after: int | None = None,
                   train_cfg: Any = None) -> dict[str, Any]:
    """Train ``init`` on ``trajs`` with ``train_sft`` (action-token loss, resumable), with the
    phase options of ``pretrain_train_config`` or, when given, ``train_cfg``."""
    from eef.models.train import train_sft
    if (out / "eef_phase.json").exists():  # this phase finished in an earlier call
        return json.loads((out / "eef_phase.json").read_text())
    res = train_sft(str(init), trajs, out,
                    train_cfg or pretrain_train_config(cfg, steps, schedule, batch_size),
                    progress=progress, stop_after=stop_after)
    if res["steps"] >= res["total_steps"]:
        (out / "eef_phase.json").write_text(json.dumps(
            {k: res[k] for k in ("steps", "total_steps", "tokens", "trained_tokens", "seconds",
                                 "examples")}))
    return res


def _progress(items: Iterator[Trajectory], total: int, label: str, show: bool
              ) -> Iterator[Trajectory]:
    from eef.progress import tqdm
    with tqdm(total=total, desc=label, unit="seq", disable=not show) as bar:
        for t in items:
            yield t
            bar.update(1)


class _Lock:
    """An exclusive advisory lock on a file (two processes never build the same directory)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> "_Lock":
        import fcntl
        self.f = open(self.path, "a")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()
