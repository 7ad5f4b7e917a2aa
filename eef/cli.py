"""The ``eef`` command line: thin wrappers that parse, load config and call the library.

An option that sets an experiment config key takes its help text, choices, default and checks
from the config field (``_field_opt``, ``_field_config``; the fields are in
``eef.algorithms.config``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from eef.paths import record_data_dir, set_data_dir

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="EEF: agent tuning that learns from an expert's failed trajectories.")
data_app = typer.Typer(no_args_is_help=True, help="Data sets: download the public originals.")
expert_app = typer.Typer(no_args_is_help=True, help="Expert trajectories.")
model_app = typer.Typer(no_args_is_help=True, help="Models: presets and fine-tuning.")
env_app = typer.Typer(no_args_is_help=True, help="Environments as HTTP services.")
app.add_typer(env_app, name="env")
app.add_typer(data_app, name="data")
app.add_typer(expert_app, name="expert")
app.add_typer(model_app, name="model")

DataDir = typer.Option(None, "--data-dir", help="Data dir (default: $EEF_DATA_DIR or "
                       "~/.cache/eef/data).", envvar="EEF_DATA_DIR")
Resample = typer.Option("family", help="What the paired differences' bootstrap resamples: "
                        "family (a task family's goals, e.g. one WebShop product's, together) "
                        "or goal.")


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _env_kwargs(pairs: list[str] | None, max_steps: int | None) -> dict:
    from eef.algorithms.config import ConfigError, parse_assignments
    try:
        kw = dict(parse_assignments(pairs, "--env-opt"))
    except ConfigError as e:
        _fail(str(e))
    if max_steps is not None:
        kw["max_steps"] = max_steps
    return kw


def _make_env(name: str, kw: dict):
    from eef.rollout.run import PolicyRunError, open_env
    try:
        return open_env(name, kw)
    except PolicyRunError as e:
        _fail(str(e))


Workers = typer.Option(0, help="Env worker processes (rollout.backend: process; one "
                       "ScienceWorld JVM each): N episodes in flight.  0: in this process.")


def _field_opt(key: str, default: Any = ..., *decls: str, **kw: Any) -> Any:
    """A typer option that sets config key ``key`` (e.g. ``model.trim_block``): the field's
    help text and choices (as ``eef run --help-config`` lists them) and, unless given, its
    default."""
    from eef.algorithms.config import field_help, field_of
    cls, name = field_of(key)
    return typer.Option(getattr(cls(), name) if default is ... else default, *decls,
                        help=field_help(cls, name), **kw)


def _field_config(values: dict[str, Any], flags: dict[str, str]):
    """The ``ExperimentConfig`` with the dotted keys of ``values`` set (None: left at the
    default), checked as ``eef run`` checks a config; an error names the option that set the
    key (``flags``: key -> option)."""
    from eef.algorithms.config import (ConfigError, ExperimentConfig, from_dict, set_key,
                                       validate)
    raw: dict = {}
    for key, v in values.items():
        if v is not None:
            set_key(raw, key, v)
    try:
        cfg = from_dict(ExperimentConfig, raw)
        validate(cfg)
    except ConfigError as e:
        msg = str(e)
        for key, flag in flags.items():
            msg = msg.replace(key, flag)
        _fail(msg)
    return cfg


def _workers(workers: int, num_envs: int = 0) -> int:
    if workers < 0:
        _fail("--workers must be >= 0")
    if workers and num_envs not in (0, workers):
        _fail(f"--workers {workers} runs {workers} episodes in flight (one per worker); "
              "leave out --num-envs")
    return workers


@app.command()
def tasks(env: str = typer.Argument(..., help="Env name (webshop, sciworld)."),
          split: str = typer.Option("all", help="train | dev | test | all."),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
          by_type: bool = typer.Option(False, "--by-type", help="Round-robin over task types "
                                       "(as env.eval_order: by_type): a prefix covers every "
                                       "type."),
          limit: Optional[int] = typer.Option(None, help="First N tasks only."),
          data_dir: Optional[Path] = DataDir):
    """List an env's tasks."""
    from eef.envs.base import round_robin_by_type
    set_data_dir(data_dir)
    if limit is not None and limit < 1:
        _fail("--limit must be >= 1")
    e = _make_env(env, {})
    try:
        ts = e.tasks(split)
    except ValueError as err:
        _fail(str(err))
    if by_type:
        pos = {t.id: t for t in ts}
        ts = [pos[i] for i in round_robin_by_type(list(pos))]
    ts = ts[:limit] if limit else ts
    out = sys.stdout
    for t in ts:
        out.write((json.dumps(t.to_json(), ensure_ascii=False) if as_json
                   else f"{t.id}\t{t.split}\t{t.instruction}") + "\n")
    e.close()


def _run_policy(env: str, policy: str, split: str, tasks_file: Path | None, limit: int | None,
                out: Path | None, env_opt: list[str] | None, max_steps: int | None,
                **kw: Any):
    """``eef.rollout.run.run_policy`` with the command line's env options, its errors as
    one line each."""
    from eef.rollout.run import PolicyRunError, run_policy
    from eef.trajectory import TrajectoryFormatError
    try:
        return run_policy(env, policy, env_options=_env_kwargs(env_opt, max_steps),
                          split=split if tasks_file is None else None, tasks_file=tasks_file,
                          limit=limit, out=out, progress=sys.stderr.isatty(), **kw)
    except (PolicyRunError, TrajectoryFormatError) as e:
        _fail(str(e))


#: ``eef eval``'s options that set config fields (their help, default and checks are the
#: fields'): config key -> option
EVAL_FIELDS = {"sampling.max_new_tokens": "--max-new-tokens", "model.system": "--system",
               "model.trim_block": "--trim-block", "model.max_context": "--max-context",
               "model.prefix_cache_mb": "--prefix-cache-mb", "model.dtype": "--dtype",
               "rollout.ground_by": "--ground-by", "sampling.no_repeat_ngram": "--no-repeat-ngram",
               "rollout.ground_actions": "--ground", "rollout.avoid_repeats": "--avoid-repeats",
               "rollout.fill_without_thought": "--fill-without-thought"}


@app.command("eval")
def eval_cmd(env: str = typer.Argument(..., help="Env name."),
             policy: str = typer.Option(..., help="Policy spec: expert:NAME, hf:PATH, "
                                        "openai:MODEL@URL."),
             split: str = typer.Option("test", help="Split to evaluate on."),
             tasks_file: Optional[Path] = typer.Option(None, "--tasks", help="File with one task "
                                                       "id per line (overrides --split)."),
             limit: Optional[int] = typer.Option(None, help="Evaluate the first N tasks only."),
             out: Optional[Path] = typer.Option(None, help="Append trajectories to this JSONL "
                                                "(a rerun resumes)."),
             as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
             env_opt: Optional[List[str]] = typer.Option(None, help="Env option KEY=VALUE."),
             max_steps: Optional[int] = typer.Option(None, help="Step limit per episode."),
             seed: int = typer.Option(0, help="Base seed."),
             temperature: float = _field_opt("sampling.eval_temperature", 0.0),
             num_envs: int = typer.Option(0, help="Episodes in flight (batched engine; 0: "
                                          "16 for models, sequential for scripted experts)."),
             workers: int = Workers,
             max_new_tokens: Optional[int] = _field_opt("sampling.max_new_tokens", None),
             no_repeat_ngram: int = _field_opt("sampling.no_repeat_ngram"),
             system: Optional[str] = _field_opt("model.system"),
             ground: bool = _field_opt("rollout.ground_actions", False),
             ground_by: str = _field_opt("rollout.ground_by"),
             avoid_repeats: bool = _field_opt("rollout.avoid_repeats", False),
             fill_without_thought: bool = _field_opt("rollout.fill_without_thought", False),
             trim_block: int = _field_opt("model.trim_block"),
             max_context: Optional[int] = _field_opt("model.max_context"),
             prefix_cache_mb: Optional[int] = _field_opt("model.prefix_cache_mb", None),
             dtype: str = _field_opt("model.dtype"),
             data_dir: Optional[Path] = DataDir):
    """Evaluate a policy: win rate (success share) and mean score (0-100).  The options that
    tune an hf: policy are the experiment config's model.* keys."""
    from eef.policy import Sampling
    from eef.rollout.episode import summarize
    set_data_dir(data_dir)
    given = {"sampling.max_new_tokens": max_new_tokens, "model.system": system,
             "model.trim_block": trim_block, "model.max_context": max_context,
             "model.prefix_cache_mb": prefix_cache_mb, "model.dtype": dtype,
             "rollout.ground_by": ground_by, "sampling.no_repeat_ngram": no_repeat_ngram,
             "rollout.ground_actions": ground, "rollout.avoid_repeats": avoid_repeats,
             "rollout.fill_without_thought": fill_without_thought}
    if (ground_by != "fuzzy" or avoid_repeats or fill_without_thought) and not ground:
        _fail("--ground-by, --avoid-repeats and --fill-without-thought apply with --ground")
    cfg = _field_config(given, EVAL_FIELDS)
    m = cfg.model
    if system and policy.startswith("expert:"):
        _fail("--system is for hf: and openai: policies")
    hf_only = {"--trim-block": trim_block != 1, "--max-context": max_context is not None,
               "--prefix-cache-mb": prefix_cache_mb is not None, "--dtype": dtype != "auto",
               "--no-repeat-ngram": no_repeat_ngram != 0}
    for flag, set_ in hf_only.items():
        if set_ and not policy.startswith("hf:"):
            _fail(f"{flag} is only for hf: policies")
    kw: dict = {"system": system} if system else {}
    if policy.startswith("hf:"):
        kw.update(dtype=m.dtype, trim_block=m.trim_block, prefix_cache_mb=m.prefix_cache_mb,
                  max_context=m.max_context)
    sampling = Sampling(temperature=temperature, max_new_tokens=cfg.sampling.max_new_tokens,
                        no_repeat_ngram=cfg.sampling.no_repeat_ngram)
    trajs = _run_policy(env, policy, split, tasks_file, limit, out, env_opt, max_steps,
                        sampling=sampling, seed=seed, num_envs=num_envs,
                        workers=_workers(workers, num_envs),
                        ground=ground and cfg.rollout.grounding(), **kw)
    summary = {"env": env, "policy": policy, "split": split if tasks_file is None else None,
               **summarize(trajs), "grounded_steps": sum(len(t.meta.get("grounded", []))
                                                         for t in trajs),
               "tasks": [{"id": t.task_id, "reward": t.reward, "success": t.success,
                          "steps": len(t)} for t in trajs]}
    if as_json:
        print(json.dumps(summary))
    else:
        print(f"{policy} on {env} ({summary['n']} tasks): win rate {summary['win_rate']:.1%}, "
              f"mean score {summary['mean_score']:.1f}, mean steps {summary['mean_steps']:.1f}")


@expert_app.command("collect")
def expert_collect(env: str = typer.Argument(..., help="Env name."),
                   expert: str = typer.Option(..., help="Expert name (oracle, heuristic, late, "
                                              "gold, noisy, llm, random), parameters in "
                                              "parentheses: 'late(dawdle=0.5)'."),
                   out: Path = typer.Option(..., help="Output JSONL (a rerun resumes)."),
                   split: str = typer.Option("train", help="Split."),
                   tasks_file: Optional[Path] = typer.Option(None, "--tasks", help="Task ids file."),
                   limit: Optional[int] = typer.Option(None, help="First N tasks only."),
                   policy: Optional[str] = typer.Option(None, help="For --expert llm: the model "
                                                        "spec (openai:MODEL@URL or hf:PATH)."),
                   env_opt: Optional[List[str]] = typer.Option(None, help="Env option KEY=VALUE."),
                   max_steps: Optional[int] = typer.Option(None, help="Step limit per episode."),
                   seed: int = typer.Option(0, help="Base seed."),
                   temperature: float = typer.Option(0.0, help="Sampling temperature (llm)."),
                   workers: int = Workers,
                   data_dir: Optional[Path] = DataDir):
    """Collect one expert trajectory per task."""
    from eef.policy import Sampling
    from eef.rollout.episode import summarize
    set_data_dir(data_dir)
    kw = {}
    if expert == "llm":
        if not policy:
            _fail("--expert llm needs --policy openai:MODEL@URL (or hf:PATH)")
        kw["policy"] = policy  # the llm expert adds the env's system prompt to the model
    elif policy:
        _fail("--policy is only for --expert llm")
    trajs = _run_policy(env, f"expert:{expert}", split, tasks_file, limit, out, env_opt,
                        max_steps, sampling=Sampling(temperature=temperature), seed=seed,
                        num_envs=16 if expert == "llm" else 1, workers=_workers(workers), **kw)
    s = summarize(trajs)
    typer.echo(f"{len(trajs)} trajectories in {out}: success {s['win_rate']:.1%}, "
               f"mean score {s['mean_score']:.1f}", err=True)


@data_app.command("download")
def data_download(dataset: str = typer.Argument(..., help="Data set: webshop."),
                  base_url: Optional[str] = typer.Option(None, help="Mirror base URL (files "
                                                         "are fetched as BASE_URL/NAME)."),
                  data_dir: Optional[Path] = DataDir):
    """Download a data set's public originals into the data dir (checksummed, resumable)."""
    from eef.paths import data_dir as resolve
    from eef.download import DownloadError, download_webshop
    set_data_dir(data_dir)
    if dataset != "webshop":
        _fail(f"unknown data set {dataset!r}; known: webshop (ScienceWorld ships its data in "
              "its package)")
    root = resolve()

    def progress(name: str, done: int, total: int | None) -> None:
        if sys.stderr.isatty():
            pct = f" {100 * done / total:.0f}%" if total else ""
            print(f"\r{name}: {done / 1e6:.1f} MB{pct}", end="", file=sys.stderr)

    try:
        paths = download_webshop(root, base_url, progress)
    except DownloadError as e:
        _fail(str(e), 1)
    for p in paths:
        typer.echo(str(p))


@app.command()
def show(path: Path = typer.Argument(..., help="Trajectory JSONL."),
         task: Optional[str] = typer.Option(None, help="Only this task id."),
         limit: int = typer.Option(5, help="Show at most N trajectories (0: all).")):
    """Pretty-print trajectories in the terminal."""
    from eef.report.show import show as do_show
    from eef.trajectory import TrajectoryFormatError, iter_jsonl
    try:
        n = do_show(iter_jsonl(path), task, limit or None)
    except TrajectoryFormatError as e:
        _fail(str(e))
    if n == 0:
        _fail(f"no trajectory{' of task ' + task if task else ''} in {path}", 1)


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="Run directories (or `eef compare` "
                                                 "output directories)."),
           out: Path = typer.Option(Path("report.html"), help="HTML file to write."),
           title: str = typer.Option("EEF report", help="Page title."),
           obs_chars: int = typer.Option(300, help="Clip Figure 1 observations to N characters "
                                         "(0: never)."),
           pairs: Optional[str] = typer.Option(None, help="Paired differences A-B to show, "
                                               "comma-separated (default: every method vs sft "
                                               "and vs rft_xn, eef vs the expert)."),
           resample: str = Resample,
           data_dir: Optional[Path] = DataDir):
    """One self-contained HTML report (plots, paired differences, Figure 1 and Figure 2 views)
    of run dirs."""
    set_data_dir(data_dir)
    from eef.report.comparison import parse_pairs
    from eef.report.html import ReportConfig, report_command
    from eef.report.rundata import ReportError
    try:
        report_command(run_dirs, out, ReportConfig(
            title=title, obs_chars=obs_chars, pairs=parse_pairs(pairs) if pairs else None,
            resample=resample))
    except ReportError as e:
        _fail(str(e))


@model_app.command("init")
def model_init(preset: str = typer.Option("tiny", help="Preset: tiny | small | test."),
               env: str = typer.Option("webshop", help="Env whose text trains the tokenizer "
                                       "(and pre-training)."),
               out: Optional[Path] = typer.Option(None, help="Copy the model here (default: "
                                                  "only the per-machine cache)."),
               pretrain: bool = typer.Option(True, help="Self-supervised pre-training on env "
                                             "text (built once per machine, cached)."),
               seed: int = typer.Option(0, help="Initialisation seed."),
               data_dir: Optional[Path] = DataDir):
    """Build a preset model + tokenizer in HF format (loads as hf:DIR)."""
    set_data_dir(data_dir)
    from eef.presets import PresetError, init_preset
    try:
        if pretrain:
            from eef.presets import build_preset
            path = build_preset(preset, env, out=str(out) if out else None, seed=seed)
        else:
            if out is None:
                _fail("--no-pretrain needs --out")
            path = init_preset(preset, env, out, seed=seed)
    except (PresetError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(str(path))


@model_app.command("train")
def model_train(model: str = typer.Argument(..., help="Model directory (HF format)."),
                data: Path = typer.Argument(..., help="Trajectories JSONL (Step.train = loss "
                                            "mask)."),
                out: Path = typer.Option(..., help="Output directory (a rerun resumes)."),
                sets: Optional[List[str]] = typer.Option(None, "--set", help="TrainConfig "
                                                          "field=value (e.g. lr=3e-4)."),
                data_dir: Optional[Path] = DataDir):
    """Supervised fine-tuning with the action-masked loss (Eq. 1)."""
    from eef.algorithms.config import ConfigError, apply_overrides, from_dict
    from eef.models.hparams import TrainConfig
    from eef.models.train import TrainError, train_sft
    try:
        cfg = from_dict(TrainConfig, apply_overrides({}, sets))
    except ConfigError as e:
        _fail(str(e))
    try:
        res = train_sft(model, data, out, cfg)
    except (TrainError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(json.dumps({k: v for k, v in res.items() if k != "losses"}, default=str))


@app.command()
def serve(model: str = typer.Argument(..., help="Model spec, e.g. hf:DIR."),
          host: str = typer.Option("127.0.0.1", help="Interface (0.0.0.0: all; default "
                                   "loopback only)."),
          port: int = typer.Option(8000, help="TCP port."),
          max_batch: int = typer.Option(64, help="Requests decoded together at most."),
          max_wait_ms: float = typer.Option(10.0, help="Batching window."),
          max_body_bytes: int = typer.Option(2_000_000, help="Largest request body."),
          max_new_tokens: int = typer.Option(1024, help="Largest max_tokens a request may "
                                             "ask for."),
          max_adapters: int = typer.Option(4, help="LoRA adapters loaded at once at most "
                                           "(POST /v1/load_lora_adapter; 0: none)."),
          system: Optional[str] = typer.Option(None, help="System message."),
          dtype: str = _field_opt("model.dtype"),
          data_dir: Optional[Path] = DataDir):
    """Serve a model over an OpenAI-compatible /v1/chat/completions API (LoRA adapters are
    loaded at run time with vLLM's /v1/load_lora_adapter endpoints)."""
    set_data_dir(data_dir)
    dtype = _field_config({"model.dtype": dtype}, {"model.dtype": "--dtype"}).model.dtype
    from eef.models.serve import ServeConfig, serve as do_serve
    from eef.policy import PolicySpecError
    cfg = ServeConfig(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                      max_body_bytes=max_body_bytes, max_new_tokens=max_new_tokens,
                      max_adapters=max_adapters)
    try:
        do_serve(model, cfg, **({"system": system} if system else {}),
                 **({"dtype": dtype} if model.startswith("hf:") else {}))
    except (PolicySpecError, ValueError, FileNotFoundError) as e:
        _fail(str(e))


@env_app.command("serve")
def env_serve(env: str = typer.Argument(..., help="Env name (webshop, sciworld)."),
              host: str = typer.Option("127.0.0.1", help="Interface (default loopback only)."),
              port: int = typer.Option(8000, help="TCP port."),
              max_sessions: int = typer.Option(64, help="Concurrent sessions at most."),
              idle_timeout: float = typer.Option(600.0, help="Seconds before an idle session "
                                                 "is closed."),
              max_body_bytes: int = typer.Option(1_048_576, help="Largest request body."),
              allow_client_kwargs: bool = typer.Option(False, help="Let clients pass env "
                                                       "constructor options."),
              env_opt: Optional[List[str]] = typer.Option(None, help="Env option KEY=VALUE."),
              data_dir: Optional[Path] = DataDir):
    """Serve an env over HTTP (create / reset / step / ... per session); use it as http:."""
    set_data_dir(data_dir)
    from eef.envs.server import ServerConfig, serve_env
    cfg = ServerConfig(max_sessions=max_sessions, idle_timeout_s=idle_timeout,
                       max_body_bytes=max_body_bytes, allow_client_kwargs=allow_client_kwargs)
    try:
        serve_env(env, host, port, config=cfg, **_env_kwargs(env_opt, None))
    except (KeyError, ValueError, FileNotFoundError) as e:
        _fail(str(e))


def _load_cfg(config: Path | None, sets: list[str] | None):
    from eef.algorithms.config import ConfigError, load_config
    try:
        return load_config(config, sets or [])
    except ConfigError as e:
        _fail(str(e))


def _print_rows(title: str, rows: list[dict], cols: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=title)
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[(f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")))
                    for c in cols])
    Console(width=200).print(t)


@app.command()
def run(config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: the "
                                                "embedded WebShop / heuristic / tiny / EEF)."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override KEY=VALUE, e.g. "
                                                  "method.M=5 (repeatable)."),
        out: Optional[Path] = typer.Option(None, help="Run directory (default runs/<config "
                                           "name>); rerunning the same command resumes."),
        help_config: bool = typer.Option(False, "--help-config", help="List every config key."),
        data_dir: Optional[Path] = DataDir):
    """Run a whole experiment: expert, base model, the method, evaluation after each stage."""
    if help_config:
        from eef.algorithms.config import describe
        for key, default, text in describe():
            print(f"{key:34s} {default:>14s}  {text}")
        return
    set_data_dir(data_dir)
    cfg = _load_cfg(config, sets)
    from eef.algorithms.pipeline import run_experiment
    out = out or Path("runs") / (config.stem if config else "default")
    record_data_dir(out)
    try:
        rows = run_experiment(cfg, out)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e), 1)
    _print_rows(f"{cfg.method.name} on {cfg.env.name} — {out}", rows,
                ["what", "split", "n", "win_rate", "mean_score"])


@app.command()
def compare(config: Optional[Path] = typer.Argument(None, help="Experiment YAML (default: "
                                                    "embedded)."),
            methods: str = typer.Option("sft,rft,rft_xn,eef", help="Comma-separated methods "
                                        "(sft, sft_all, rft, rft_xn, eef, eto)."),
            seeds: int = typer.Option(3, help="Number of seeds (0..N-1)."),
            train_seeds: int = typer.Option(1, "--train-seeds", help="Trainings per seed with "
                                            "different training seeds on the same tasks and "
                                            "expert data (retraining noise)."),
            sets: Optional[List[str]] = typer.Option(None, "--set", help="Override KEY=VALUE."),
            out: Optional[Path] = typer.Option(None, help="Output directory (one run dir per "
                                               "seed); rerunning resumes."),
            pairs: Optional[str] = typer.Option(None, help="Paired differences A-B to report, "
                                                "comma-separated (e.g. eef-rft_xn,eef-expert; "
                                                "default: every method vs sft and vs rft_xn, "
                                                "eef vs the expert)."),
            resample: str = Resample,
            data_dir: Optional[Path] = DataDir):
    """Run several methods at equal counted budget over seeds; a mean ± std table, the expert
    on the same goals, paired per-goal differences with bootstrap intervals."""
    set_data_dir(data_dir)
    cfg = _load_cfg(config, sets)
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    from eef.algorithms.pipeline import BUDGET_KEYS, METHODS, compare as do_compare
    from eef.report.comparison import parse_pairs, write_comparison
    bad = [m for m in ms if m not in METHODS]
    if bad or not ms:
        _fail(f"unknown method(s) {bad}; known: {', '.join(METHODS)}")
    from eef.report.comparison import UNITS, check_unit
    from eef.report.rundata import ReportError
    try:  # before the runs: a typo fails now, not after hours of work
        check_unit(resample, "--resample")
    except ReportError as e:
        _fail(str(e))
    if seeds < 1 or train_seeds < 1:
        _fail("--seeds and --train-seeds must be >= 1")
    try:
        wanted = parse_pairs(pairs) if pairs is not None else None
    except ValueError as e:
        _fail(str(e))
    out = out or Path("runs") / f"compare-{config.stem if config else 'default'}"
    record_data_dir(out)
    import warnings
    written = []  # the comparison as of the last finished run (the final one is printed)

    def paired(_table):  # after every finished run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a half-written line was already resumed past
            written[:] = [write_comparison([out], out, wanted, resample)]

    try:
        table = do_compare(cfg, ms, list(range(seeds)), out, train_seeds, after_run=paired)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e), 1)
    _print_rows(f"{cfg.env.name}: final iteration on {cfg.env.eval_split} — {out}", table,
                ["method", "seeds", "runs", "win_rate_mean", "win_rate_std", "score_mean",
                 "score_std"] + [f"{k}_mean" for k in BUDGET_KEYS])
    c = written[0]  # --seeds and --train-seeds >= 1: at least one run finished
    if c.pairs:
        rows = c.pair_rows()
        _print_rows(f"paired per-goal differences A - B, 95% bootstrap intervals over "
                    f"{UNITS[resample]} — "
                    f"{out / 'paired.md'}", rows, list(rows[0]))
    if c.solvable:
        rows = c.solvable_rows()
        _print_rows("failed expert trajectories with a solvable simulated state", rows,
                    list(rows[0]))
    for note in c.notes:
        print(f"note: {note}")


def main() -> None:
    from eef.memory import use_allocator
    try:  # jemalloc bounds a training's memory (eef.memory; EEF_ALLOCATOR=system: glibc's)
        use_allocator()
    except ValueError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise SystemExit(2)
    app()


if __name__ == "__main__":
    main()
