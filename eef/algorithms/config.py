"""Experiment configuration: dataclasses with a help text per field, YAML files, overrides.

``load_config(path, overrides)`` reads a YAML file (or the embedded default, package data, when
``path`` is None), applies ``key.sub=value`` overrides (``apply_overrides``; values parsed as
YAML by ``parse_assignments``, the one parser of the command line's KEY=VALUE options) and
returns an ``ExperimentConfig``.  Unknown keys are errors that name the key and list the known ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from eef.models.hparams import DPOConfig, TrainConfig
from eef.rollout.engine import EngineConfig


#: the methods (docs/pipeline.md), in the order of the comparison tables (``method.name``)
MethodName = Literal["sft", "sft_all", "rft", "rft_xn", "eef", "eto"]
METHODS: tuple[str, ...] = typing.get_args(MethodName)
#: what RFT, RFT×N and EEF keep of the agent's successes (``method.rft_keep``)
KeepRule = Literal["shortest", "distinct", "all"]
KEEP_RULES: tuple[str, ...] = typing.get_args(KeepRule)
#: what RFT×N's N matches of EEF's budget (``method.rft_match``)
RftMatch = Literal["episodes", "steps", "tokens", "exact"]
RFT_MATCH: tuple[str, ...] = typing.get_args(RftMatch)
#: the dtype names of ``model.dtype`` (``auto`` and eef.models.precision.DTYPES; a test keeps
#: them equal)
DtypeName = Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"]


class ConfigError(ValueError):
    """A config file or override is malformed."""


def _h(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING):
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass
class EnvConfig:
    name: str = _h("Env name (webshop, sciworld, http).", "webshop")
    options: dict[str, Any] = _h("Env constructor options (e.g. max_steps).", factory=dict)
    train_split: str = _h("Split whose tasks are trained on.", "train")
    train_tasks: int | None = _h("Use a seeded subset of this many training tasks (None: all).",
                                 300)
    dev_tasks: int = _h("Training tasks held out as a dev slice for choices (never trained on).",
                        0)
    eval_split: str = _h("Split evaluated after every stage.", "test")
    eval_tasks: int | None = _h("Evaluate on the first N tasks of eval_split (None: all).", None)
    eval_order: Literal["split", "by_type"] = _h("Order of eval_split before taking eval_tasks: 'split' (the split's own "
                         "order) or 'by_type' (round-robin over task types, a type being the task "
                         "id up to its last '/', e.g. sciworld/boil; spreads a subset over all "
                         "types).", "split")


@dataclass
class ExpertConfig:
    policy: str = _h("Expert policy spec (expert:heuristic, expert:noisy, openai:MODEL@URL).",
                     "expert:heuristic")
    policies: list[str] = _h("Several experts, each collected on every training task (instead "
                             "of policy): every trajectory is trained on, labelled and "
                             "simulated on its own, its expert named in source.expert.",
                             factory=list)
    trajectories: str | list[str] | None = _h(
        "Import expert trajectories from this JSONL, or from each file of a list, instead of "
        "collecting them (every trajectory of a task is kept).", None)

    def sources(self) -> list[str]:
        """One name per expert: the imported files, else the collected policies."""
        t = self.trajectories
        if t:
            return [t] if isinstance(t, str) else list(t)
        return list(self.policies) or [self.policy]


@dataclass
class ModelConfig:
    base: str = _h("Base model: preset:tiny / preset:small (built once per machine and cached) "
                   "or hf:PATH_OR_ID.", "preset:tiny")
    pretrain: bool = _h("Pre-train a preset on env text before use (eef.presets.build; "
                        "built once per machine and cached). False: random initialisation.", True)
    preset_options: dict[str, Any] = _h("Options of the preset build (PretrainConfig fields, "
                                        "see docs/tiny-preset.md).", factory=dict)
    replay: int = _h("Pre-training sequences of the preset (a seeded sample of its corpus, "
                     "eef.presets.build.replay_sequences) added to every training stage's "
                     "data against forgetting; 0: none.  Needs a pre-trained preset base model.", 0)
    system: str | None = _h("System message of the chat format.", None)
    trim_block: int = _h("In-process policy: a prompt over the model's context drops its "
                         "oldest exchanges in blocks of this many, so the kept window stays "
                         "put for several turns and earlier turns' keys/values are reused "
                         "(eef.models.decode.PrefixCache); 1: drop one at a time.", 1)
    prefix_cache_mb: int = _h("In-process policy: memory for reusing earlier turns' keys and "
                              "values (eef.models.decode.PrefixCache); 0: off.", 512)
    max_context: int | None = _h("In-process policy: longest prompt + turn in tokens (older "
                                 "turns are trimmed past it); None: the model's "
                                 "max_position_embeddings.  Set it to train.max_tokens so that "
                                 "rollouts never see a longer context than the training "
                                 "windows (docs/models.md, context budget).", None)
    dtype: DtypeName = _h("In-process policy: weights' dtype: auto (bfloat16 where the CPU or GPU "
                    "computes it fast and the model has 50M+ parameters, else float32), "
                    "float32, bfloat16 (eef.models.precision).", "auto")
    device: str = _h("Device of the rollout and evaluation policy: auto (cuda when available, "
                     "else cpu), cpu, cuda, cuda:N.", "auto")
    serve_url: str | None = _h("OpenAI-compatible server (e.g. vLLM started with --enable-lora "
                               "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True) serving model.base "
                               "for rollouts and evaluations; each LoRA adapter is loaded into "
                               "it by path (eef.models.served). None: in-process.", None)
    serve_urls: list[str] = _h("More servers of the same base model (e.g. one vLLM server per "
                               "GPU node): every act batch is split over serve_url and these "
                               "(eef.rollout.replicas).  With rollout.backend ray each server's "
                               "client runs in a Ray actor.  Every server must see the adapter "
                               "paths (shared file system).", factory=list)
    serve_model: str | None = _h("Name of the base model on serve_url (None: the first one "
                                 "GET /models lists).", None)
    serve_api_key_env: str = _h("Env var holding serve_url's API key (unset: no key).",
                                "OPENAI_API_KEY")


@dataclass
class SamplingConfig:
    temperature: float = _h("Sampling temperature of training rollouts and simulations.", 1.0)
    top_p: float = _h("Nucleus sampling of training rollouts and simulations.", 1.0)
    eval_temperature: float = _h("Temperature of evaluation episodes (0: greedy).", 0.0)
    max_new_tokens: int = _h("Longest agent turn in tokens.", 96)
    no_repeat_ngram: int = _h("Ban any n-gram of this many tokens from occurring twice within "
                              "one line of an agent turn (0: off; else >= 2): breaks the copy "
                              "loops of small models ('slim fit slim fit ...') while a thought "
                              "and its action may quote the same words.", 0)


@dataclass
class MethodConfig:
    name: MethodName = _h("The algorithm (docs/pipeline.md).", "eef")
    iterations: int = _h("I: rounds of rollouts + fine-tuning after the SFT stage (paper: 3).", 3)
    M: int = _h("EEF: simulated states per expert trajectory besides s_0; l = floor(|tau|/(M+1)) "
                "(paper: 5).", 5)
    samples_per_state: int = _h("EEF: agent episodes from every simulated state.", 1)
    simulate_successful: bool = _h("EEF: also simulate from successful expert trajectories.",
                                   False)
    train_neutral: bool = _h("EEF: train on expert steps labelled neutral (between two states "
                             "of equal solvability, or next to a diverged replay).", True)
    sim_steps: Literal["remaining", "full"] = _h("EEF: policy steps of a simulation from expert state s_k: 'remaining' "
                        "(the env's limit minus the k replayed steps) or 'full' (the env's whole "
                        "limit counted from s_k, so a late state is not unsolvable for lack of "
                        "steps; docs/pipeline.md has the measurement behind the default).",
                        "full")
    rft_n: float = _h("RFT×N: rollouts per task per iteration (a fractional part f adds one "
                      "rollout for a seeded share f of the tasks); 0 matches N to the EEF run "
                      "in the same run directory (method.rft_match).", 0.0)
    rft_match: RftMatch = _h("With rft_n 0, what RFT×N's N matches of EEF's rollouts and "
                        "simulations, as a mean over iterations: 'episodes', 'steps' (policy env "
                        "steps), 'tokens' (generated + prompt tokens processed after prefix "
                        "reuse); 'exact': policy env steps iteration by iteration (N_i of "
                        "iteration i matched to EEF's iteration i).", "steps")
    rft_round: bool = _h("Round the matched N to an integer >= 1 (the recorded tables in "
                         "docs/RESULTS.md); false keeps it fractional (equal budget in "
                         "expectation).", False)
    rft_keep: KeepRule = _h("What RFT, RFT×N and EEF keep of the agent's successes, per task (s_0 "
                       "rollouts) and per important state (EEF samples), over all iterations: "
                       "'shortest' (one: highest reward, then fewest steps), 'distinct' (every "
                       "success with a different action sequence, as rejection-sampling "
                       "fine-tuning does) or 'all' (every success, repeats included).",
                       "distinct")
    train_from: Literal["base", "continue"] = _h("Each iteration fine-tunes from 'base' (the base model, on all data so "
                         "far) or 'continue' (the previous iteration's model).", "base")
    keep_expert_successes: bool = _h("Keep the expert's successful trajectories in every "
                                     "iteration's training set.", True)
    iteration_lr: float | None = _h("Peak learning rate of the iterations' fine-tuning (None: "
                                    "train.lr, as SFT).  With train_from 'continue' on a few "
                                    "new trajectories a lower one keeps the SFT model: a fresh "
                                    "AdamW's first step moves every trained weight by ~lr.",
                                    None)
    sft_model: str | None = _h("pi_0 given: a model already fine-tuned on the expert's successes "
                               "(a directory `eef model train` wrote) that replaces the SFT "
                               "stage; it is evaluated as the SFT row and explores in the first "
                               "iteration, and every seed of a comparison starts from it.  The "
                               "iterations still retrain as train_from says (from 'base': on the "
                               "expert's successes + what was found).  None: SFT trains pi_0.",
                               None)
    explore_tasks: int | None = _h("RFT / RFT×N / EEF roll out (from s_0) and simulate (the "
                                   "expert's trajectories) on a seeded subset of this many "
                                   "training tasks (None: all); SFT and every fine-tuning still "
                                   "use all the expert's successes.  Caps the cost of an "
                                   "iteration when the expert covered many tasks.", None)


@dataclass
class ExperimentConfig:
    env: EnvConfig = _h("The environment and its task splits.", factory=EnvConfig)
    expert: ExpertConfig = _h("Where the expert trajectories come from.", factory=ExpertConfig)
    model: ModelConfig = _h("The base model.", factory=ModelConfig)
    train: TrainConfig = _h("SFT hyper-parameters (eef.models.hparams.TrainConfig).",
                            factory=TrainConfig)
    rollout: EngineConfig = _h("Rollout engine (eef.rollout.engine.EngineConfig).",
                               factory=EngineConfig)
    sampling: SamplingConfig = _h("Decoding.", factory=SamplingConfig)
    method: MethodConfig = _h("The algorithm.", factory=MethodConfig)
    dpo: DPOConfig = _h("DPO of method eto (eef.models.hparams.DPOConfig).", factory=DPOConfig)
    seed: int = _h("Seed of task subsets, training and sampling.", 0)
    train_seed: int | None = _h("Seed of fine-tuning and of the agent's sampling (rollouts, "
                                "simulations, evaluation) when it should differ from seed "
                                "(task subsets, expert, replay sample); None: seed.  eef compare "
                                "--train-seeds sets it to measure retraining noise.", None)


#: the embedded default of ``eef run``, shipped as package data (configs/webshop-smollm2.yaml is
#: its documented copy, kept identical by tests/test_pipeline.py)
DEFAULT_CONFIG = "default.yaml"


def default_yaml() -> str:
    """The text of the embedded default config."""
    return resources.files("eef.algorithms").joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def _resolve_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def from_dict(cls: type, d: dict[str, Any], path: str = "") -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{path.rstrip('.') or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(path + k for k in unknown))}; "
                          f"known under {path.rstrip('.') or 'top level'}: {', '.join(sorted(known))}")
    kw = {}
    for k, v in d.items():
        tp = _resolve_type(hints[k])
        if is_dataclass(tp):
            kw[k] = from_dict(tp, v or {}, f"{path}{k}.")
        else:
            kw[k] = _coerce(v, tp, f"{path}{k}")
    return cls(**kw)


def _coerce(v: Any, tp: Any, path: str) -> Any:
    if v is None or tp is Any:
        return v
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if tp is float and isinstance(v, str):  # YAML 1.1 reads 3e-4 as a string
        try:
            return float(v)
        except ValueError:
            pass
    base = typing.get_origin(tp) or tp
    if base is typing.Literal:
        if v not in typing.get_args(tp):
            raise ConfigError(f"{path}: {v!r} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return v
    if isinstance(base, type) and not isinstance(v, base):
        raise ConfigError(f"{path}: expected {base.__name__}, got {type(v).__name__} ({v!r})")
    return v


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_assignments(pairs: list[str] | None, flag: str = "--set") -> list[tuple[str, Any]]:
    """``KEY=VALUE`` strings (``--set``, ``--env-opt``) as (key, value) pairs, each value read
    as YAML (``5``, ``3e-4``, ``true``, ``null``, ``[a, b]``, ``{max_steps: 8}``; a plain word
    stays a string).  The one parser of every command line override."""
    out = []
    for o in pairs or []:
        k, sep, v = o.partition("=")
        if not sep or not k.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {o!r}")
        try:
            out.append((k.strip(), yaml.safe_load(v)))
        except yaml.YAMLError as e:
            raise ConfigError(f"{flag} {o}: invalid value ({e})") from e
    return out


def apply_overrides(raw: dict[str, Any], pairs: list[str] | None, flag: str = "--set"
                    ) -> dict[str, Any]:
    """``raw`` (a config as read from YAML) with the ``key.sub=value`` overrides ``pairs``."""
    for dotted, value in parse_assignments(pairs, flag):
        set_key(raw, dotted, value, flag)
    return raw


def set_key(raw: dict[str, Any], dotted: str, value: Any, flag: str = "--set") -> None:
    """Set ``key.sub`` of ``raw`` (a config as read from YAML) to ``value``."""
    keys = dotted.split(".")
    cur = raw
    for k in keys[:-1]:
        nxt = cur.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{flag} {dotted}: {k} is not a section")
        cur = nxt
    cur[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None
                ) -> ExperimentConfig:
    if path is None:
        raw = yaml.safe_load(default_yaml())
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from e
    apply_overrides(raw, overrides)
    method = raw.get("method")
    if isinstance(method, dict) and method.get("rft_match") == "round":
        raise ConfigError("method.rft_match: 'round' is now method.rft_match: steps with "
                          "method.rft_round: true")
    cfg = from_dict(ExperimentConfig, raw)
    validate(cfg)
    return cfg


def sft_model_dir(path: str) -> Path:
    """The directory ``method.sft_model`` names, checked: a model or LoRA adapter that ``eef
    model train`` wrote (config.json or adapter_config.json there)."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise ConfigError(f"method.sft_model: {path}: no such directory")
    if not ((p / "config.json").exists() or (p / "adapter_config.json").exists()):
        raise ConfigError(f"method.sft_model: {path}: neither config.json nor "
                          "adapter_config.json there; give the directory `eef model train` wrote")
    return p


def validate(cfg: ExperimentConfig) -> None:
    m = cfg.method
    e = cfg.expert
    t = e.trajectories
    if t is not None and not (isinstance(t, str) or (
            isinstance(t, list) and t and all(isinstance(x, str) for x in t))):
        raise ConfigError(f"expert.trajectories: expected a file or a list of files, got {t!r}")
    if not all(isinstance(x, str) for x in e.policies):
        raise ConfigError(f"expert.policies: expected a list of policy specs, got {e.policies!r}")
    if t and e.policies:
        raise ConfigError("expert.policies and expert.trajectories are both set: collect "
                          "(policies) or import (trajectories)")
    if len(set(e.sources())) < len(e.sources()):
        raise ConfigError(f"expert: {', '.join(e.sources())} names an expert twice")
    try:
        cfg.train.check()
    except ValueError as e:
        raise ConfigError(f"train.{e}") from None
    if cfg.model.trim_block < 1:
        raise ConfigError(f"model.trim_block must be >= 1, not {cfg.model.trim_block}")
    if cfg.model.max_context is not None and cfg.model.max_context < 16:
        raise ConfigError(f"model.max_context must be >= 16 or null, not {cfg.model.max_context}")
    if cfg.sampling.no_repeat_ngram < 0 or cfg.sampling.no_repeat_ngram == 1:
        raise ConfigError(f"sampling.no_repeat_ngram must be 0 (off) or >= 2, not "
                          f"{cfg.sampling.no_repeat_ngram}")
    if cfg.sampling.max_new_tokens < 1:
        raise ConfigError(f"sampling.max_new_tokens must be >= 1, not "
                          f"{cfg.sampling.max_new_tokens}")
    r = cfg.rollout
    if (r.avoid_repeats or r.ground_by != "fuzzy" or r.fill_without_thought) and not \
            r.ground_actions:
        raise ConfigError("rollout.ground_by, avoid_repeats and fill_without_thought apply "
                          "with rollout.ground_actions: true")
    if r.fill_without_thought and r.ground_by != "likelihood":
        raise ConfigError("rollout.fill_without_thought needs rollout.ground_by: likelihood "
                          "(fuzzy grounding continues no turn)")
    if cfg.model.prefix_cache_mb < 0:
        raise ConfigError(f"model.prefix_cache_mb must be >= 0, not {cfg.model.prefix_cache_mb}")
    try:
        cfg.dpo.check()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if m.sft_model is not None:
        sft_model_dir(m.sft_model)
    if m.iterations < 0 or m.M < 0 or m.samples_per_state < 1 or m.rft_n < 0:
        raise ConfigError("method: iterations, M, rft_n must be >= 0 and samples_per_state >= 1")
    if m.rft_n and m.rft_n < 1:
        raise ConfigError(f"method.rft_n must be 0 (matched to EEF) or >= 1, not {m.rft_n}")
    if m.explore_tasks is not None and m.explore_tasks < 1:
        raise ConfigError(f"method.explore_tasks must be >= 1 or null, not {m.explore_tasks}")
    if not (cfg.model.base.startswith("preset:") or cfg.model.base.startswith("hf:")):
        raise ConfigError(f"model.base: {cfg.model.base!r} must be preset:NAME or hf:PATH")
    if cfg.model.replay < 0 or (cfg.model.replay and not (
            cfg.model.base.startswith("preset:") and cfg.model.pretrain)):
        raise ConfigError("model.replay must be >= 0 and needs a pre-trained preset base model "
                          "(preset:NAME with model.pretrain true): it replays that preset's "
                          "pre-training corpus")
    if cfg.model.serve_urls and not cfg.model.serve_url:
        raise ConfigError("model.serve_urls lists more servers besides model.serve_url: set "
                          "model.serve_url first")
    if cfg.model.serve_url and cfg.train.lora_r <= 0:
        raise ConfigError("model.serve_url needs LoRA training (train.lora_r > 0): a running "
                          "server loads adapters but cannot swap in fully fine-tuned weights")


def field_of(key: str, root: type = ExperimentConfig) -> tuple[type, str]:
    """The dataclass that holds the dotted config key ``key`` (e.g. ``model.dtype``) and the
    field's name."""
    *path, name = key.split(".")
    cls = root
    for k in path:
        cls = _resolve_type(typing.get_type_hints(cls)[k])
    return cls, name


def field_help(cls: type, name: str) -> str:
    """The help text of field ``name`` of config dataclass ``cls``, with its choices when its
    type is a ``Literal``."""
    f = next(f for f in fields(cls) if f.name == name)
    text = f.metadata.get("help", "")
    tp = _resolve_type(typing.get_type_hints(cls)[name])
    if typing.get_origin(tp) is Literal:
        text += f" (choices: {', '.join(map(str, typing.get_args(tp)))})"
    return text


def describe(cls: type = ExperimentConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) of every field, for ``eef run --help-config``."""
    rows = []
    inst = cls()
    for f in fields(cls):
        tp = _resolve_type(typing.get_type_hints(cls)[f.name])
        if is_dataclass(tp):
            rows.append((prefix + f.name, "", f.metadata.get("help", "")))
            rows += describe(tp, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, repr(getattr(inst, f.name)), field_help(cls, f.name)))
    return rows
