"""What a preset build is made of: its options (``PretrainConfig``), its errors, and the
``Curriculum`` interface that each env's curriculum module fills in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Union

if TYPE_CHECKING:
    from eef.trajectory import Trajectory

#: a data dir argument (None: ``EEF_DATA_DIR`` or the default; see ``eef.paths.data_dir``)
DataDir = Union[str, os.PathLike, None]


class PresetError(ValueError):
    """Unknown preset or env, or an unusable corpus."""


class PretrainError(PresetError):
    """Bad pre-training options, an env without a pre-training corpus, or an unusable build."""


class BuildInterrupted(PretrainError):
    """A build stopped on purpose (``stop_after``) before it finished; calling again resumes."""


@dataclass
class PretrainConfig:
    """Options of a preset build (``build_preset(..., **options)``); all enter the cache key."""

    short_drills: int = field(default=25600, metadata={
        "help": "short lookup drills (the warm-up corpus): 1-4 hits of 1-3 title words with "
                "random train identifiers, no page header; the thought looks the named hits up"})
    warmup_steps: int = field(default=400, metadata={
        "help": "optimizer steps on the short drills alone (constant learning rate) before "
                "the whole corpus (0: none); copying formed after ~150-250 steps of 64"})
    warmup_batch_size: int = field(default=64, metadata={
        "help": "sequences per warm-up step"})
    short_replay: int = field(default=1000, metadata={
        "help": "short drills that also enter the main phase (the rest are warm-up only)"})
    lookup_drills: int = field(default=1500, metadata={
        "help": "page-shaped lookup drills in the main phase: 2-6 hits of 3-8 title words, "
                "page header and search step"})
    explore_episodes: int = field(default=100, metadata={
        "help": "random-exploration episodes on train goals (purchase step removed)"})
    search_drills: int = field(default=0, metadata={
        "help": "search drills (WebShop): a train goal's first page, then the trained action "
                "search[<content words of the goal's product phrase>] (0: none)"})
    copy_drills: int = field(default=0, metadata={
        "help": "span-copy drills (WebShop): a search page whose instruction is 'Find me "
                "<2-14 words>' (random train-title words or a span of a train title), then "
                "the trained action search[find me <the same words>]; trained in a phase of "
                "their own on top of the build without them (0: none).  The phase wears away "
                "identifier copying: use it with train.id_aliases"})
    copy_lr: float = field(default=1e-3, metadata={
        "help": "learning rate of the copy-drill phase (constant; batches of "
                "warmup_batch_size)"})
    pick_tasks: int = field(default=1500, metadata={
        "help": "copy tasks: a results page, then click[ASIN] of the product named by a few of "
                "its title words"})
    option_share: float = field(default=0.25, metadata={
        "help": "share of copy tasks continued on the item page with click[<named option "
                "value>]"})
    thought_share: float = field(default=0.5, metadata={
        "help": "share of copy-task turns with a short thought naming what is clicked"})
    relabel: float = field(default=1.0, metadata={
        "help": "share of transcripts / copy tasks whose ASINs are replaced by other catalogue "
                "ASINs drawn at random (copying cannot be replaced by recall)"})
    min_hits: int = field(default=2, metadata={
        "help": "fewest hits of a copy task's results page (pages are cut to a random number "
                "of hits in [min_hits, max_hits]: shorter sequences, more steps)"})
    max_hits: int = field(default=10, metadata={
        "help": "most hits of a copy task's results page"})
    name_words: int = field(default=3, metadata={
        "help": "title words naming the target (more are added until they single it out)"})
    steps: int = field(default=0, metadata={
        "help": "optimizer steps (0: one pass over the corpus)"})
    batch_size: int = field(default=16, metadata={"help": "sequences per main-phase step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW, cosine)"})
    max_tokens: int = field(default=1536, metadata={"help": "context budget per example"})
    seed: int = field(default=0, metadata={"help": "seed of the corpus, init and data order"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every N steps (resume)"})

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "PretrainConfig":
        known = {f.name: f for f in fields(cls)}
        bad = sorted(set(options) - set(known))
        if bad:
            raise PretrainError(f"unknown preset option(s) {', '.join(bad)}; known: "
                                f"{', '.join(known)}")
        cfg = cls(**options)
        for name in ("option_share", "thought_share", "relabel"):
            v = getattr(cfg, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise PretrainError(f"preset option {name} must be in [0, 1], got {v!r}")
        for name in ("short_drills", "short_replay", "lookup_drills", "warmup_steps",
                     "explore_episodes", "search_drills", "copy_drills", "pick_tasks",
                     "steps"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 0:
                raise PretrainError(f"preset option {name} must be an int >= 0")
        if min(cfg.short_replay, cfg.short_drills) + cfg.lookup_drills + cfg.explore_episodes \
                + cfg.search_drills + cfg.pick_tasks == 0:
            raise PretrainError("empty main-phase corpus: short_replay, lookup_drills, "
                                "explore_episodes, search_drills and pick_tasks are all 0")
        if not isinstance(cfg.copy_lr, (int, float)) or not cfg.copy_lr > 0:
            raise PretrainError(f"preset option copy_lr must be > 0, got {cfg.copy_lr!r}")
        if cfg.warmup_steps and not cfg.short_drills:
            raise PretrainError("warmup_steps > 0 needs short_drills > 0 (the warm-up trains "
                                "on them)")
        if not 1 <= cfg.min_hits <= cfg.max_hits <= 10 or cfg.name_words < 1 \
                or cfg.batch_size < 1 or cfg.warmup_batch_size < 1:
            raise PretrainError("preset options need 1 <= min_hits <= max_hits <= 10, "
                                "name_words >= 1, batch_size >= 1")
        return cfg




@dataclass(frozen=True)
class Curriculum:
    """What the preset needs of one env (``eef.presets.webshop``, ``eef.presets.sciworld``)."""

    env: str
    #: the tokenizer's corpus: env text (no goal outcome, no test trajectory)
    texts: Callable[[DataDir], Iterable[str]]
    #: what ``texts`` holds, in words (recorded in ``eef_preset.json``)
    texts_what: str
    #: the pre-training corpus of a ``PretrainConfig``
    corpus: Callable[[PretrainConfig, DataDir], Iterator["Trajectory"]]
    #: data files the corpus reads under ``<data dir>/<env>/`` (the first existing of each
    #: tuple); their checksums enter the cache key
    data_files: tuple[tuple[str, ...], ...] = ()
    #: identifiers that become one added token each
    identifiers: Callable[[DataDir], list[str]] | None = None
    #: markers that become tokens of their own (they count towards the vocabulary size)
    extra_tokens: tuple[str, ...] = ()
    #: ``copy_drills(data_dir, n, seed)``: the span-copy drills of ``PretrainConfig.copy_drills``
    copy_drills: Callable[[DataDir, int, int], Iterator["Trajectory"]] | None = None
    #: versions of the env's software whose text enters the corpus (added to the cache key)
    versions: Callable[[], dict[str, str]] | None = None
