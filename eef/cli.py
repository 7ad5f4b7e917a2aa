"""The ``eef`` command line: thin wrappers that parse, load config and call the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

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
    import eef.envs as envs
    try:
        return envs.make(name, **kw)
    except KeyError as e:
        _fail(str(e.args[0]) if e.args else str(e))
    except (FileNotFoundError, ValueError, TypeError, RuntimeError) as e:
        _fail(str(e))


Workers = typer.Option(0, help="Env worker processes (rollout.backend: process; one "
                       "ScienceWorld JVM each): N episodes in flight.  0: in this process.")


Dtype = typer.Option("auto", help="hf: models: weights' dtype: auto (bfloat16 where the "
                     "CPU or GPU computes it fast and the model has 50M+ parameters, else "
                     "float32), float32, bfloat16.")


def _dtype(name: str) -> str:
    from eef.models.precision import DtypeError, check_dtype
    try:
        return check_dtype(name) or "auto"
    except DtypeError as e:
        _fail(str(e))
    return name


def _workers(workers: int, num_envs: int = 0) -> int:
    if workers < 0:
        _fail("--workers must be >= 0")
    if workers and num_envs not in (0, workers):
        _fail(f"--workers {workers} runs {workers} episodes in flight (one per worker); "
              "leave out --num-envs")
    return workers


def _task_ids(env, split: str | None, tasks_file: Path | None, limit: int | None) -> list[str]:
    from eef.envs.base import UnknownTaskError
    if tasks_file is not None:
        if not tasks_file.exists():
            _fail(f"{tasks_file}: no such file")
        # one id per line; `eef tasks` output works as it is (the id is the first column)
        ids = [ln.split("\t", 1)[0].strip() for ln in tasks_file.read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
        try:
            for t in ids:
                env.task(t)
        except UnknownTaskError as e:
            _fail(f"{tasks_file}: {e}")
    else:
        try:
            ids = [t.id for t in env.tasks(split or "test")]
        except ValueError as e:
            _fail(str(e))
    return ids[:limit] if limit else ids


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


def _run_policy(env_name: str, policy: str, split: str | None, tasks_file: Path | None,
                limit: int | None, out: Path | None, env_opt: list[str] | None,
                max_steps: int | None, seed: int, temperature: float, num_envs: int = 1,
                max_new_tokens: int | None = None, ground: bool = False, workers: int = 0,
                **policy_kw):
    """Scripted experts play sequentially (they are fast); model policies (and any policy with
    ``num_envs > 1`` or ``workers``) go through the batched rollout engine, ``workers > 0``
    with that many env worker processes (``rollout.backend: process``).  Both resume from
    ``out``."""
    from eef.policy import PolicySpecError, Sampling, load_policy
    from eef.rollout.episode import collect
    from eef.trajectory import TrajectoryFormatError
    env_kw = _env_kwargs(env_opt, max_steps)
    env = _make_env(env_name, env_kw)
    ids = _task_ids(env, split, tasks_file, limit)
    try:
        pol = load_policy(policy, env, **policy_kw)
    except PolicySpecError as e:
        _fail(str(e))
    sampling = Sampling(temperature=temperature, **(
        {"max_new_tokens": max_new_tokens} if max_new_tokens else {}))
    try:
        if policy.startswith("expert:") and num_envs <= 1 and not ground and not workers:
            trajs = collect(env, pol, ids, out, sampling=sampling, seed=seed,
                            progress=sys.stderr.isatty())
        else:
            from eef.rollout.engine import EngineConfig, RolloutRequest, rollout
            from eef.rollout.pool import EnvSpec
            res = rollout(EnvSpec(env_name, env_kw), pol,
                          [RolloutRequest(t, sampling=sampling, seed=seed) for t in ids], out,
                          EngineConfig(num_envs=workers or (num_envs if num_envs > 1 else 16),
                                       backend="process" if workers else "local",
                                       progress=sys.stderr.isatty(), ground_actions=ground))
            trajs = res.trajectories
    except TrajectoryFormatError as e:
        _fail(str(e))
    finally:
        env.close()
    return trajs


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
             temperature: float = typer.Option(0.0, help="Sampling temperature (models)."),
             num_envs: int = typer.Option(0, help="Episodes in flight (batched engine; 0: "
                                          "16 for models, sequential for scripted experts)."),
             workers: int = Workers,
             max_new_tokens: Optional[int] = typer.Option(None, help="Longest model turn in "
                                                          "tokens (models; default 96)."),
             system: Optional[str] = typer.Option(None, help="System message of hf:/openai: "
                                                  "policies."),
             ground: bool = typer.Option(False, help="Map inadmissible actions to the closest "
                                         "admissible one (eef.rollout.grounding)."),
             trim_block: int = typer.Option(1, help="hf: policies: drop the oldest turns of an "
                                            "over-long prompt in blocks of this many (lets the "
                                            "prefix cache reuse earlier turns)."),
             max_context: Optional[int] = typer.Option(None, help="hf: policies: longest "
                                                       "prompt + turn in tokens (default: the "
                                                       "model's max_position_embeddings; use "
                                                       "the training window, train.max_tokens)."),
             prefix_cache_mb: Optional[int] = typer.Option(None, help="hf: policies: memory "
                                                           "for reusing earlier turns' keys/"
                                                           "values (default 512; 0: off)."),
             dtype: str = Dtype,
             data_dir: Optional[Path] = DataDir):
    """Evaluate a policy: win rate (success share) and mean score (0-100)."""
    from eef.rollout.episode import summarize
    set_data_dir(data_dir)
    if system and policy.startswith("expert:"):
        _fail("--system is for hf: and openai: policies")
    if max_new_tokens is not None and max_new_tokens < 1:
        _fail("--max-new-tokens must be >= 1")
    if trim_block < 1 or (trim_block > 1 and not policy.startswith("hf:")):
        _fail("--trim-block must be >= 1, and above 1 only for hf: policies")
    if prefix_cache_mb is not None and (prefix_cache_mb < 0 or not policy.startswith("hf:")):
        _fail("--prefix-cache-mb must be >= 0, and is only for hf: policies")
    if max_context is not None and (max_context < 16 or not policy.startswith("hf:")):
        _fail("--max-context must be >= 16, and is only for hf: policies")
    kw: dict = {"system": system} if system else {}
    if policy.startswith("hf:"):
        kw["dtype"] = _dtype(dtype)
    elif dtype != "auto":
        _fail("--dtype is only for hf: policies")
    if max_context is not None:
        kw["max_context"] = max_context
    if trim_block > 1:
        kw["trim_block"] = trim_block
    if prefix_cache_mb is not None:
        kw["prefix_cache_mb"] = prefix_cache_mb
    trajs = _run_policy(env, policy, split if tasks_file is None else None, tasks_file, limit,
                        out, env_opt, max_steps, seed, temperature, num_envs, max_new_tokens,
                        ground, _workers(workers, num_envs), **kw)
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
                   expert: str = typer.Option(..., help="Expert name (oracle, heuristic, gold, "
                                              "noisy, llm, random)."),
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
    from eef.rollout.episode import summarize
    set_data_dir(data_dir)
    kw = {}
    if expert == "llm":
        if not policy:
            _fail("--expert llm needs --policy openai:MODEL@URL (or hf:PATH)")
        kw["policy"] = policy  # the llm expert adds the env's system prompt to the model
    elif policy:
        _fail("--policy is only for --expert llm")
    trajs = _run_policy(env, f"expert:{expert}", split if tasks_file is None else None,
                        tasks_file, limit, out, env_opt, max_steps, seed, temperature,
                        16 if expert == "llm" else 1, None, False, _workers(workers), **kw)
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
           data_dir: Optional[Path] = DataDir):
    """One self-contained HTML report (plots, Figure 1 and Figure 2 views) of run dirs."""
    set_data_dir(data_dir)
    from eef.report.html import ReportConfig, report_command
    from eef.report.rundata import ReportError
    try:
        report_command(run_dirs, out, ReportConfig(title=title, obs_chars=obs_chars))
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
    from eef.models.train import TrainConfig, TrainError, train_sft
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
          dtype: str = Dtype,
          data_dir: Optional[Path] = DataDir):
    """Serve a model over an OpenAI-compatible /v1/chat/completions API (LoRA adapters are
    loaded at run time with vLLM's /v1/load_lora_adapter endpoints)."""
    set_data_dir(data_dir)
    from eef.models.serve import ServeConfig, serve as do_serve
    from eef.policy import PolicySpecError
    cfg = ServeConfig(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                      max_body_bytes=max_body_bytes, max_new_tokens=max_new_tokens,
                      max_adapters=max_adapters)
    try:
        do_serve(model, cfg, **({"system": system} if system else {}),
                 **({"dtype": _dtype(dtype)} if model.startswith("hf:") else {}))
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
            data_dir: Optional[Path] = DataDir):
    """Run several methods at equal counted budget over seeds; a mean ± std table."""
    set_data_dir(data_dir)
    cfg = _load_cfg(config, sets)
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    from eef.algorithms.pipeline import BUDGET_KEYS, METHODS, compare as do_compare
    bad = [m for m in ms if m not in METHODS]
    if bad or not ms:
        _fail(f"unknown method(s) {bad}; known: {', '.join(METHODS)}")
    if seeds < 1 or train_seeds < 1:
        _fail("--seeds and --train-seeds must be >= 1")
    out = out or Path("runs") / f"compare-{config.stem if config else 'default'}"
    record_data_dir(out)
    try:
        table = do_compare(cfg, ms, list(range(seeds)), out, train_seeds)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e), 1)
    _print_rows(f"{cfg.env.name}: final iteration on {cfg.env.eval_split} — {out}", table,
                ["method", "seeds", "runs", "win_rate_mean", "win_rate_std", "score_mean",
                 "score_std"] + [f"{k}_mean" for k in BUDGET_KEYS])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
