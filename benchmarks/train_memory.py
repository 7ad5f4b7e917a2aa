"""The training process's memory over its steps, and the allocator settings that bound it.

    python benchmarks/train_memory.py [--steps N] [--goals N] [--variants a,b] [--quick] [--json]

The SmolLM2 recipe of configs/webshop-smollm2-compare.yaml (LoRA rank 16, bf16 autocast, batch
8, 1,024-token windows, identifier aliases) on the heuristic expert's WebShop successes, run for
``--steps`` optimizer steps once per allocator variant, each in its own child process so that
its resident set (RSS) is its own.  The parent samples the child's RSS every 0.1 s and splits
the samples at the steps the child logs (``train_log.jsonl``).  Variants:

- ``glibc``: the default allocator, no trimming (``eef model train`` with ``trim_every: 0``);
- ``arena2``: ``MALLOC_ARENA_MAX=2`` (fewer glibc arenas);
- ``mmap``: ``MALLOC_MMAP_THRESHOLD_=65536`` (a fixed threshold: blocks of 64 KB and more are
  mapped and unmapped, never kept in the heap; glibc otherwise raises the threshold up to
  32 MB as such blocks are freed, and a heap of mixed-size tensors fragments);
- ``trim``: ``train.trim_every: 1`` (``eef.memory.release``, i.e. garbage collection and
  ``malloc_trim(0)``, after every step; figures recorded before this field existed came from a
  thread calling ``malloc_trim(0)`` once per logged step);
- ``trim10``: ``train.trim_every: 10``, the training's default; every other variant runs with
  ``trim_every: 0``;
- ``jemalloc``: ``LD_PRELOAD`` of the jemalloc that ships with ray (skipped when absent), its
  default settings;
- ``jemalloc_keep``: the same with ``MALLOC_CONF`` set to keep freed pages for a few steps
  (``JEMALLOC_KEEP``).

Figures per variant: RSS after the first step (``first_mb``: model, optimizer, the first
batch's activations), the peak (``peak_mb``), the growth from step 1 to the last step
(``growth_mb``), the drift (``drift_mb``: the median step peak of the last quarter of the
steps minus that of the first quarter, less sensitive to one long batch), the median step
time and the window tokens/s of the run (``tokens_per_s``: what the setting costs), and the
child's RSS once ``train_sft`` has returned (``end_mb``) and after ``eef.memory.release``
(``released_mb``: what a pipeline stage keeps after its training).  The
machine's ceiling beside them: its total memory (``mem_total_mb``).  ``--quick`` runs a 2-layer model of SmolLM2's shapes (random weights) for a few steps: the
mechanism, not the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import emit, median, parser, table

from eef.memory import jemalloc_library, rss_mb

#: jemalloc keeping freed pages for reuse: no separate arena for allocations of 8 MB and more
#: (by default jemalloc purges that arena at once, so a step's activations fault in anew each
#: step) and freed pages kept 30 s (a few steps) before they go back to the system
JEMALLOC_KEEP = "oversize_threshold:0,dirty_decay_ms:30000,muzzy_decay_ms:0"

VARIANTS = {
    "glibc": {},
    "arena2": {"MALLOC_ARENA_MAX": "2"},
    "mmap": {"MALLOC_MMAP_THRESHOLD_": "65536"},
    "trim": {"EEF_BENCH_TRIM_EVERY": "1"},
    "trim10": {"EEF_BENCH_TRIM_EVERY": "10"},
    "jemalloc": {"LD_PRELOAD": "<jemalloc>"},
    "jemalloc_keep": {"LD_PRELOAD": "<jemalloc>", "MALLOC_CONF": JEMALLOC_KEEP},
}


def mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) >> 10


def small_model(out: Path) -> str:
    """A 2-layer Llama with SmolLM2's tokenizer and widths, random weights (``--quick``)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    from eef.models.named import resolve
    base = resolve("smollm2-135m-instruct", progress=False)
    cfg = AutoConfig.from_pretrained(base)
    cfg.num_hidden_layers = 2
    LlamaForCausalLM(cfg).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return str(out)


def child(args) -> None:
    """One training run (in the child process)."""
    from smollm2_agent import expert_data

    from eef.memory import release
    from eef.models.hparams import TrainConfig
    from eef.models.named import resolve
    from eef.models.train import train_sft
    model = args.model or resolve("smollm2-135m-instruct", progress=False)
    cfg = TrainConfig(lr=5e-4, epochs=1, max_steps=args.steps, batch_size=8, max_tokens=1024,
                      lora_r=16, lora_alpha=32, mixed_precision="bf16", id_aliases=True,
                      save_every=10**9, seed=0, log_every=1,
                      trim_every=int(os.environ.get("EEF_BENCH_TRIM_EVERY", "0")))
    res = train_sft(model, expert_data(args.goals), args.out, cfg, progress=False)
    mem = release()  # what a pipeline stage does after its training (eef.memory)
    (Path(args.out) / "bench.json").write_text(json.dumps(
        {**{k: res[k] for k in ("steps", "tokens", "seconds")}, "end_mb": mem["before_mb"],
         "released_mb": mem["after_mb"]}))


def run_variant(name: str, args, model: str | None, tmp: Path) -> dict | None:
    env = dict(os.environ)
    for k, v in VARIANTS[name].items():
        if v == "<jemalloc>":
            v = jemalloc_library()
            if v is None:
                return None
        env[k] = v
    out = tmp / name
    while out.exists():  # a variant named twice (e.g. a,b,a: the machine's drift between runs)
        out = out.with_name(out.name + "+")
    cmd = [sys.executable, __file__, "--child", "--out", str(out), "--steps", str(args.steps),
           "--goals", str(args.goals)] + (["--model", model] if model else [])
    out.mkdir(parents=True)
    # stderr to a file: a pipe read only at the end would block a child that writes much
    err_f = open(out / "stderr.txt", "w+")
    proc = subprocess.Popen(cmd, env=env, stderr=err_f, text=True)
    log = out / "train_log.jsonl"
    per_step: list[int] = []  # the peak RSS of each step
    times: list[float] = []
    peak, cur, seen = 0, 0, 0
    while proc.poll() is None:
        r = rss_mb(proc.pid)
        if r is None:  # the child has exited
            break
        peak, cur = max(peak, r), max(cur, r)
        n = log.read_text().count("\n") if log.exists() else 0
        while seen < n:
            per_step.append(cur)
            times.append(time.perf_counter())
            cur, seen = 0, seen + 1
        time.sleep(0.1)
    proc.wait()
    err_f.seek(0)
    err = err_f.read()
    err_f.close()
    if proc.returncode != 0:
        raise RuntimeError(f"variant {name} failed:\n{err[-3000:]}")
    n = log.read_text().count("\n")
    per_step += [cur] * (n - seen)
    done = json.loads((out / "bench.json").read_text())
    steps = per_step[:args.steps]
    gaps = [b - a for a, b in zip(times, times[1:])]
    q = max(1, len(steps) // 4)
    return {"variant": name, "steps": len(steps), "first_mb": steps[0] if steps else 0,
            "peak_mb": peak, "growth_mb": (steps[-1] - steps[0]) if steps else 0,
            "drift_mb": median(steps[-q:]) - median(steps[:q]) if steps else 0,
            "per_step_mb": steps, "median_step_s": median(gaps),
            "end_mb": done["end_mb"], "released_mb": done["released_mb"],
            "tokens_per_s": done["tokens"] / max(done["seconds"], 1e-9)}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per variant "
                   "(default 40; --quick 4)")
    p.add_argument("--goals", type=int, default=None, help="WebShop train goals the expert "
                   "plays for the data (default 400; --quick 40)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {', '.join(VARIANTS)}; a variant may come "
                   "twice (a,b,a), which shows how much the machine drifted between runs")
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    p.add_argument("--out", help=argparse_hidden())
    p.add_argument("--model", help=argparse_hidden())
    args = p.parse_args()
    args.steps = args.steps or (4 if args.quick else 40)
    args.goals = args.goals or (40 if args.quick else 400)
    if args.child:
        return child(args)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {bad}: choose among {list(VARIANTS)}")
    res = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = small_model(tmp / "model") if args.quick else None
        for name in names:
            r = run_variant(name, args, model, tmp)
            if r is None:
                print(f"{name}: skipped (no jemalloc library found)", flush=True)
                continue
            print(f"{name}: first {r['first_mb']} MB, peak {r['peak_mb']} MB, growth "
                  f"{r['growth_mb']} MB over {r['steps']} steps", flush=True)
            res.append(r)
    table(f"training RSS, {args.steps} steps (machine: {mem_total_mb()} MB)",
          ["variant", "first step MB", "peak MB", "growth MB", "drift MB", "s / step",
           "tokens/s", "end MB", "released MB"],
          [[r["variant"], r["first_mb"], r["peak_mb"], r["growth_mb"], r["drift_mb"],
            r["median_step_s"], r["tokens_per_s"], r["end_mb"], r["released_mb"]]
           for r in res])
    emit({"mem_total_mb": mem_total_mb(), "steps": args.steps, "variants": res}, args.json)


def argparse_hidden() -> str:
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
