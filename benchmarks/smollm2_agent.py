"""SmolLM2-135M-Instruct as the CPU agent: training and rollout speed against the machine's bf16
ceiling, and the rollouts' memory, measured in one run.

    python benchmarks/smollm2_agent.py [--quick] [--json] [--episodes N] [--num-envs N]

1. The bf16 matmul peak now (``peak_gflops_bf16``; fp32 beside it).
2. Training: ``train_sft`` with ``mixed_precision: bf16`` (autocast over float32 weights, the
   full fine-tuning path) on the heuristic expert's WebShop successes: window tokens/s
   (``train_tokens_per_s``) and ``train_mfu``, the training FLOPs of the very batches it ran
   (``eef.models.train.flops_per_example``) per second over the bf16 peak.  The same with the
   recipes' LoRA (rank 16 on every projection, frozen weights held in bf16, no weight
   gradients for them: ``train_lora_tokens_per_s``, ``train_lora_mfu``, its FLOPs counted as
   LoRA executes them).
3. Rollouts, in a child process (so that its peak RSS is the rollouts' alone): the model trained
   in 2, greedy, ``--num-envs`` WebShop test episodes in flight, default context (the model's
   8,192 positions), bf16 weights: env steps/s (``rollout_steps_per_s``), the process's peak RSS
   (``peak_rss_mb``), and the ceiling (``rollout_ceiling_steps_per_s``): the same env steps if the
   work the decoder did -- linear layers on every computed token (prompt tokens not reused from
   the prefix cache, new tokens; the output head on new tokens) plus attention (every computed
   position's keys) -- ran at the bf16 peak, with no time for the env, sampling or memory traffic;
   and the roofline (``rollout_roofline_steps_per_s``): the same plus the one-token decode steps'
   reads (every attended key/value, the weights once per step) at the read bandwidth measured now.
   Also the share of second turns that bf16 and float32 weights answer identically, greedy
   (``bf16_fp32_same_turn``).

4. The kernels' bounds, measured now in bf16 at the model's shapes: the linear layers' matmuls
   forward and backward (``kernel_linear_gflops``, the output head's ``kernel_head_gflops``),
   causal attention forward and backward at 2 x 1,024 tokens (``kernel_attention_gflops``) and
   the decoder's one-token attention over a 1,500-position cache of 16 rows, as ``eef.models.
   decode`` runs it (``kernel_decode_attention_gb_per_s``).  ``train_mfu_kernel_bound``: the
   MFU of the training run above if its linear layers, head and attention took their FLOPs at
   those rates and nothing else took time; ``rollout_kernel_bound_steps_per_s``: the rollouts'
   roofline with the keys/values read at the decode attention's rate instead of the memory's.
   A target above its bound is beyond what these kernels do on this machine.

Targets (issue: SmolLM2 at the speed of this CPU): ``train_mfu >= 0.5``, rollouts >= 50% of
their ceiling, peak RSS <= 6 GB with 16 episodes in flight.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from _util import emit, linear_gflop, parser, peak_gflops, table

from eef.memory import rss_mb

MODEL = "smollm2-135m-instruct"


def _peak_rss_sampler() -> tuple[list[int], threading.Event]:
    peak, stop = [0], threading.Event()

    def run() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb() or 0)
            time.sleep(0.1)
    threading.Thread(target=run, daemon=True).start()
    return peak, stop


def expert_data(n_goals: int) -> list:
    import eef.envs as envs
    from eef.policy import load_policy
    from eef.rollout.episode import collect
    env = envs.make("webshop", max_steps=10)
    ids = [t.id for t in env.tasks("train")[:n_goals]]
    trajs = collect(env, load_policy("expert:heuristic", env), ids, None, progress=False)
    env.close()
    return [t for t in trajs if t.success]


def bench_train(out: Path, steps: int, batch: int, max_tokens: int, n_goals: int,
                lora_r: int = 0) -> dict:
    from eef.models.format import ChatFormat, build_examples
    from eef.models.hf import load_model_and_tokenizer
    from eef.models.named import resolve
    from eef.models.hparams import TrainConfig
    from eef.models.train import epoch_batches, flops_per_example, train_sft
    data = expert_data(n_goals)
    cfg = TrainConfig(lr=1e-4, max_steps=steps, batch_size=batch, max_tokens=max_tokens,
                      mixed_precision="bf16", save_every=10**9, warmup_ratio=0.0,
                      lora_r=lora_r, lora_alpha=2 * lora_r)
    base = resolve(MODEL)
    res = train_sft(base, data, out, cfg, progress=False)
    # the FLOPs of the batches that ran (same examples, same seeded order)
    _, tok = load_model_and_tokenizer(base)
    from transformers import AutoConfig
    mcfg = AutoConfig.from_pretrained(base)
    examples, _ = build_examples(data, ChatFormat(tok), max_tokens)
    per_epoch = -(-len(examples) // batch)
    flops, parts = 0.0, {"body": 0.0, "head": 0.0, "attention": 0.0}
    for s in range(steps):
        e, k = divmod(s, per_epoch)
        for i in epoch_batches(examples, batch, cfg.seed, e)[k]:
            n, n_tr = len(examples[i].input_ids), examples[i].n_trained
            flops += flops_per_example(mcfg, n, n_tr, lora_r, cfg.lora_targets)
            # full fine-tuning's parts (eef.models.train.flops_per_example's terms)
            parts["attention"] += 3 * mcfg.num_hidden_layers * 2 * n * n * mcfg.hidden_size
            parts["head"] += 6 * n_tr * mcfg.hidden_size * mcfg.vocab_size
            parts["body"] += flops_per_example(mcfg, n, 0) - 3 * mcfg.num_hidden_layers * 2 \
                * n * n * mcfg.hidden_size
    return {"train_flops_parts": parts,"train_steps": steps, "train_examples": len(examples),
            "train_tokens": res["tokens"], "train_seconds": res["seconds"],
            "train_tokens_per_s": res["tokens"] / res["seconds"],
            "train_gflops_per_s": flops / res["seconds"] / 1e9}


def bench_rollout(model: str, episodes: int, num_envs: int, max_new: int) -> dict:
    """Run in a child process: the rollouts' figures and the process's peak RSS."""
    import eef.envs as envs
    from eef.models.hf import load_hf_policy
    from eef.policy import Sampling
    from eef.rollout.engine import EngineConfig, RolloutRequest, rollout
    from eef.rollout.pool import EnvSpec
    peak, stop = _peak_rss_sampler()
    env = envs.make("webshop", max_steps=10)
    ids = [t.id for t in env.tasks("test")][:episodes]
    env.close()
    pol = load_hf_policy(model)  # dtype auto: bf16 on this CPU
    t0 = time.perf_counter()
    res = rollout(EnvSpec("webshop", {"max_steps": 10}), pol,
                  [RolloutRequest(t, sampling=Sampling(max_new_tokens=max_new), seed=0)
                   for t in ids], None, EngineConfig(num_envs=num_envs, progress=False))
    dt = time.perf_counter() - t0
    stop.set()
    st, cfg = pol.stats, pol.model.config
    computed = st.prompt_tokens - st.reused_tokens
    # linear layers on every computed token, the head on new tokens (and the last prompt
    # position of each call: about one per new turn, counted in new_tokens' first token)
    gflop = linear_gflop(cfg, computed + st.new_tokens, st.new_tokens)
    attn_gflop = 4 * cfg.num_hidden_layers * cfg.hidden_size * st.attended / 1e9
    steps = sum(len(t) for t in res.trajectories)
    # memory traffic of the one-token decode steps (memory-bound): every attended key/value
    # and, per step, the weights
    weight_bytes = sum(p.numel() * p.element_size() for p in pol.model.parameters())
    kv_gb = st.decode_attended * pol.kv_bytes_per_token() / 1e9
    decode_gb = kv_gb + st.steps * weight_bytes / 1e9
    counts = {"prompt_tokens": st.prompt_tokens, "reused_tokens": st.reused_tokens,
              "new_tokens": st.new_tokens, "decode_steps": st.steps}
    # greedy agreement of these bf16 weights with float32 on the second turns of the episodes
    ref = load_hf_policy(model, dtype="float32")
    ctx = [t.prefix(min(1, len(t))) for t in res.trajectories]
    s = Sampling(max_new_tokens=max_new)
    a, b = pol.act(ctx, s), ref.act(ctx, s)
    return {"rollout_episodes": len(res.trajectories), "rollout_env_steps": steps,
            "rollout_seconds": dt, "rollout_steps_per_s": steps / dt,
            "rollout_dtype": str(next(pol.model.parameters()).dtype).replace("torch.", ""),
            **counts, "linear_gflop": gflop, "attention_gflop": attn_gflop,
            "score": 100 * sum(t.reward for t in res.trajectories) / len(res.trajectories),
            "decode_read_gb": decode_gb, "decode_kv_read_gb": kv_gb,
            "bf16_fp32_same_turn": sum(x == y for x, y in zip(a, b)) / len(a),
            "peak_rss_mb": peak[0]}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=0, help="rollout episodes (default 16 "
                   "quick, 48 full)")
    p.add_argument("--num-envs", type=int, default=16, help="episodes in flight")
    p.add_argument("--out", default="", help="work dir (default: the eef cache)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)  # the rollout phase
    a = p.parse_args()
    if a.child:  # the rollout phase, in its own process
        m, episodes, num_envs, max_new = a.child.split(",")
        print(json.dumps(bench_rollout(m, int(episodes), int(num_envs), int(max_new))))
        return
    from eef.paths import cache_dir
    work = Path(a.out) if a.out else cache_dir() / "bench" / "smollm2-agent"
    steps, batch = (4, 4) if a.quick else (16, 8)
    episodes = a.episodes or (16 if a.quick else 48)

    peak = peak_gflops(dtype="bfloat16")
    peak32 = peak_gflops()
    print(f"matmul peak: bf16 {peak:.0f} GFLOP/s, fp32 {peak32:.0f}", flush=True)
    import shutil
    shutil.rmtree(work / f"sft-{steps}x{batch}", ignore_errors=True)
    tr = bench_train(work / f"sft-{steps}x{batch}", steps, batch, 1024, 96)
    print(f"training: {tr['train_tokens_per_s']:.0f} tok/s", flush=True)
    shutil.rmtree(work / f"lora-{steps}x{batch}", ignore_errors=True)
    lo = bench_train(work / f"lora-{steps}x{batch}", steps, batch, 1024, 96, lora_r=16)
    print(f"training with LoRA: {lo['train_tokens_per_s']:.0f} tok/s", flush=True)
    child = subprocess.run(
        [sys.executable, __file__, "--child",
         f"{work / f'sft-{steps}x{batch}'},{episodes},{a.num_envs},64"],
        capture_output=True, text=True)
    if child.returncode:
        sys.exit(f"rollout phase failed:\n{child.stderr[-3000:]}")
    ro = json.loads(child.stdout.strip().splitlines()[-1])
    ceiling_s = (ro["linear_gflop"] + ro["attention_gflop"]) / peak
    bw = read_bandwidth()
    figs = {"peak_gflops_bf16": peak, "peak_gflops_fp32": peak32, **tr, **ro,
            "train_mfu": tr["train_gflops_per_s"] / peak,
            "train_lora_tokens_per_s": lo["train_tokens_per_s"],
            "train_lora_mfu": lo["train_gflops_per_s"] / peak,
            "rollout_ceiling_steps_per_s": ro["rollout_env_steps"] / ceiling_s}
    figs["rollout_share_of_ceiling"] = figs["rollout_steps_per_s"] / \
        figs["rollout_ceiling_steps_per_s"]
    # the roofline: the same work, with the decode steps' reads at the memory bandwidth
    figs["read_gb_per_s"] = bw
    figs["rollout_roofline_steps_per_s"] = ro["rollout_env_steps"] / (
        ceiling_s + ro["decode_read_gb"] / bw)
    from transformers import AutoConfig

    from eef.models.named import resolve
    k = kernel_rates(AutoConfig.from_pretrained(resolve(MODEL)))
    figs.update(k)
    parts = tr.pop("train_flops_parts")
    bound_s = parts["body"] / (k["kernel_linear_gflops"] * 1e9) + parts["head"] / (
        k["kernel_head_gflops"] * 1e9) + parts["attention"] / (k["kernel_attention_gflops"] * 1e9)
    figs.pop("train_flops_parts", None)
    figs["train_mfu_kernel_bound"] = sum(parts.values()) / bound_s / 1e9 / peak
    figs["rollout_kernel_bound_steps_per_s"] = ro["rollout_env_steps"] / (
        ceiling_s + (ro["decode_read_gb"] - ro["decode_kv_read_gb"]) / bw
        + ro["decode_kv_read_gb"] / k["kernel_decode_attention_gb_per_s"])
    table("The kernels' rates now (bf16) and the bounds they set",
          ["linear GFLOP/s", "head GFLOP/s", "attention GFLOP/s", "decode attention GB/s",
           "read GB/s", "train MFU bound", "rollout bound steps/s"],
          [[k["kernel_linear_gflops"], k["kernel_head_gflops"], k["kernel_attention_gflops"],
            k["kernel_decode_attention_gb_per_s"], bw, figs["train_mfu_kernel_bound"],
            figs["rollout_kernel_bound_steps_per_s"]]])
    table("SmolLM2-135M-Instruct on this CPU (targets: MFU >= 0.5, rollouts >= 50% of their "
          "ceiling, peak RSS <= 6 GB with 16 in flight)",
          ["bf16 peak GFLOP/s", "train tok/s", "train MFU", "LoRA tok/s", "LoRA MFU",
           "rollout steps/s",
           "ceiling steps/s", "share", "roofline steps/s", "peak RSS MB", "bf16=fp32 turns"],
          [[peak, figs["train_tokens_per_s"], figs["train_mfu"], figs["train_lora_tokens_per_s"],
            figs["train_lora_mfu"], ro["rollout_steps_per_s"],
            figs["rollout_ceiling_steps_per_s"], figs["rollout_share_of_ceiling"],
            figs["rollout_roofline_steps_per_s"], ro["peak_rss_mb"],
            ro["bf16_fp32_same_turn"]]])
    emit(figs, a.json)


def _median_s(fn, repeats: int = 5) -> float:
    import statistics
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def kernel_rates(cfg, tokens: int = 2048, window: int = 1024, head_rows: int = 512,
                 rows: int = 16, cached: int = 1500) -> dict:
    """bf16 rates of the kernels the model runs, at its shapes (the medians of 5 runs).

    Linear layers: forward ``x @ W.T``, input gradient ``g @ W`` and weight gradient
    ``g.T @ x`` of each block projection over ``tokens`` rows (the head over ``head_rows``
    trained positions); attention: causal ``scaled_dot_product_attention`` forward and backward
    over ``tokens // window`` windows (FLOPs as ``flops_per_example`` counts them); decode
    attention: one query per row over ``cached`` positions of a cache laid out as
    ``eef.models.decode`` keeps it, all rows in one batched matmul as its decode step runs
    them, bytes = the keys and values read."""
    import torch
    import torch.nn.functional as F
    bf = torch.bfloat16
    d, inter, heads = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    kvh = cfg.num_key_value_heads
    hd = d // heads
    shapes = [(d, d), (d, kvh * hd), (d, kvh * hd), (d, d), (d, inter), (d, inter), (inter, d)]

    def linear_rate(n: int, dims: list) -> float:
        xs = {i: torch.randn(n, i, dtype=bf) for i, _ in dims}
        ws = [torch.randn(o, i, dtype=bf) for i, o in dims]
        gs = [torch.randn(n, o, dtype=bf) for _, o in dims]

        def run() -> None:
            for (i, _), w, g in zip(dims, ws, gs):
                xs[i] @ w.T
                g @ w
                g.T @ xs[i]
        return 6 * n * sum(i * o for i, o in dims) / _median_s(run) / 1e9

    b = tokens // window
    q = torch.randn(b, heads, window, hd, dtype=bf, requires_grad=True)
    kk = torch.randn(b, heads, window, hd, dtype=bf, requires_grad=True)
    v = torch.randn(b, heads, window, hd, dtype=bf, requires_grad=True)
    go = torch.randn(b, heads, window, hd, dtype=bf)

    def attention() -> None:
        F.scaled_dot_product_attention(q, kk, v, is_causal=True).backward(go)
    attn = 3 * 2 * b * window * window * d / _median_s(attention) / 1e9

    kt = torch.randn(rows, kvh, hd, cached, dtype=bf)  # keys stored transposed
    vv = torch.randn(rows, kvh, cached, hd, dtype=bf)
    qs = torch.randn(rows, kvh, heads // kvh, hd, dtype=bf)
    keep = torch.ones(rows, 1, 1, cached, dtype=torch.bool)

    def decode() -> None:  # as _LlamaRunner._attend_one
        sc = (torch.matmul(qs, kt) * hd ** -0.5).masked_fill(~keep, float("-inf"))
        torch.matmul(torch.softmax(sc.float(), dim=-1).to(bf), vv)
    dec = rows * 2 * kvh * cached * hd * 2 / _median_s(decode, 9) / 1e9
    with torch.no_grad():
        return {"kernel_linear_gflops": linear_rate(tokens, shapes),
                "kernel_head_gflops": linear_rate(head_rows, [(d, cfg.vocab_size)]),
                "kernel_attention_gflops": attn, "kernel_decode_attention_gb_per_s": dec}


def read_bandwidth(repeats: int = 5) -> float:
    """GB/s of reading a 1 GiB tensor now (the median of ``repeats``)."""
    import statistics

    import torch
    a = torch.ones(1 << 28)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.sum()
        ts.append(time.perf_counter() - t0)
    return (1 << 30) / statistics.median(ts) / 1e9


if __name__ == "__main__":
    main()
