"""Batched KV-cache decoding vs ``transformers`` ``generate``, measured side by side.

    python benchmarks/decode.py [--quick] [--json] [--batch 64] [--prompt 256] [--new 96]
                                [--repeats 3] [--threads N]

The tiny preset architecture (4 layers, d=256, vocab 4096, ~4.2M parameters; random weights:
throughput does not depend on them), a batch of random prompts of the same length, greedy
decoding of exactly ``--new`` tokens per row (no early stop, so every method produces the same
number of tokens).  Methods, interleaved ``--repeats`` times (medians quoted):

* ``generate``: ``model.generate(do_sample=False)`` with its default cache;
* ``eef fast``: ``eef.models.decode.decode`` (static cache, own Llama forward);
* ``eef hf-loop``: the same loop over the HF forward and its dynamic cache.

With more than one thread, the same two main methods are also run with 1 thread (on a shared,
busy machine 2 OpenMP threads can be many times slower than 1).  Also measured: the prefill alone (1 new token) of ``generate`` and ``eef fast``, to split the
time into prefill and per-token decoding.  Greedy outputs are compared token by token.
JSON keys: ``speedup_vs_generate`` (end-to-end new tokens/s ratio), ``decode_speedup_vs_generate``
(after the prefill), ``identical_greedy_rows`` / ``rows``; with threads > 1 also
``speedup_vs_generate_1thread`` (both at 1 thread) and ``fast_1thread_speedup_vs_generate``
(eef at 1 thread vs ``generate`` at the default threads); ``speedup_bound``: ``generate``'s
time over the time the same work (linear layers only, a lower bound) takes at the fp32 matmul
peak measured in the same run, the most any decode loop could gain.
"""

from __future__ import annotations

import statistics
import time

import torch

from _util import emit, linear_gflop, parser, peak_gflops, table


def build_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from eef.presets import PRESETS
    p = PRESETS["tiny"]
    cfg = LlamaConfig(vocab_size=p.vocab_size, hidden_size=p.hidden_size,
                      num_hidden_layers=p.num_hidden_layers,
                      num_attention_heads=p.num_attention_heads,
                      num_key_value_heads=p.num_attention_heads,
                      intermediate_size=p.intermediate_size,
                      max_position_embeddings=p.max_position_embeddings,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def run_generate(model, ids, att, new):
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0,
                             eos_token_id=None)
    return out[:, ids.shape[1]:].tolist()


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--new", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--no-one-thread", action="store_true",
                    help="skip the extra 1-thread rows (shown when threads > 1)")
    a = ap.parse_args()
    if a.quick:
        a.batch, a.prompt, a.new, a.repeats = 16, 128, 32, 2
    if a.threads:
        torch.set_num_threads(a.threads)
    from eef.models.decode import decode

    model = build_model()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, model.config.vocab_size, (a.batch, a.prompt), generator=g)
    att = torch.ones_like(ids)
    prompts = ids.tolist()
    threads = torch.get_num_threads()

    def one_thread(f):
        def g(n):
            torch.set_num_threads(1)
            try:
                return f(n)
            finally:
                torch.set_num_threads(threads)
        return g

    methods = {
        "generate": lambda n: run_generate(model, ids, att, n),
        "eef fast": lambda n: decode(model, prompts, max_new_tokens=n, fast=True),
        "eef hf-loop": lambda n: decode(model, prompts, max_new_tokens=n, fast=False),
    }
    if threads > 1 and not a.no_one_thread:
        methods["generate, 1 thread"] = one_thread(methods["generate"])
        methods["eef fast, 1 thread"] = one_thread(methods["eef fast"])
    methods["eef fast"](2)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in methods}
    prefill: dict[str, list[float]] = {"generate": [], "eef fast": []}
    outs = {}
    for r in range(a.repeats):
        for k, f in methods.items():
            t0 = time.perf_counter()
            outs[k] = f(a.new)
            times[k].append(time.perf_counter() - t0)
        for k in prefill:
            t0 = time.perf_counter()
            methods[k](1)
            prefill[k].append(time.perf_counter() - t0)
    new_tokens = a.batch * a.new
    med = {k: statistics.median(v) for k, v in times.items()}
    pre = {k: statistics.median(v) for k, v in prefill.items()}
    rate = {k: new_tokens / v for k, v in med.items()}
    dec = {k: (a.new - 1) * a.batch / max(1e-9, med[k] - pre[k]) for k in pre}
    same = {k: sum(x == y for x, y in zip(outs[k], outs["generate"])) for k in methods}
    # the ceiling: the run's work (linear layers only, a lower bound) at the fp32 matmul peak
    # measured now; greedy outputs identical to generate's rule out a lower precision
    peak = peak_gflops()
    work = linear_gflop(model.config, a.batch * (a.prompt + a.new - 1), a.batch * a.new)
    bound = med["generate"] / (work / peak)
    rows = [[k, med[k], rate[k], rate[k] / rate["generate"], pre.get(k, float("nan")),
             dec.get(k, float("nan")), f"{same[k]}/{a.batch}"] for k in methods]
    table(f"decode: batch {a.batch}, prompt {a.prompt}, {a.new} new tokens, "
          f"{n_params / 1e6:.1f}M params, {torch.get_num_threads()} threads "
          f"(median of {a.repeats})",
          ["method", "seconds", "new tok/s", "x generate", "prefill s",
           "decode tok/s (after prefill)", "greedy = generate"], rows)
    table("The ceiling: the same work (linear layers only, a lower bound) at the fp32 matmul "
          "peak measured in this run",
          ["GFLOP", "matmul peak GFLOP/s", "seconds at peak", "generate seconds",
           "most any decode loop can gain (speedup_bound)"],
          [[work, peak, work / peak, med["generate"], bound]])
    emit({"batch": a.batch, "prompt_tokens": a.prompt, "new_tokens": a.new,
          "threads": torch.get_num_threads(), "params": n_params,
          "generate_tok_s": rate["generate"], "fast_tok_s": rate["eef fast"],
          "hf_loop_tok_s": rate["eef hf-loop"],
          "speedup_vs_generate": rate["eef fast"] / rate["generate"],
          "hf_loop_speedup_vs_generate": rate["eef hf-loop"] / rate["generate"],
          "prefill_s_generate": pre["generate"], "prefill_s_fast": pre["eef fast"],
          "decode_tok_s_generate": dec["generate"], "decode_tok_s_fast": dec["eef fast"],
          "decode_speedup_vs_generate": dec["eef fast"] / dec["generate"],
          "identical_greedy_rows": same["eef fast"], "rows": a.batch,
          "repeats": a.repeats, "work_gflop": work, "matmul_peak_gflops": peak,
          "speedup_bound": bound,
          **({"generate_1thread_tok_s": rate["generate, 1 thread"],
              "fast_1thread_tok_s": rate["eef fast, 1 thread"],
              "fast_1thread_speedup_vs_generate": rate["eef fast, 1 thread"] / rate["generate"],
              "speedup_vs_generate_1thread": rate["eef fast, 1 thread"]
              / rate["generate, 1 thread"]}
             if "eef fast, 1 thread" in rate else {})}, a.json)


if __name__ == "__main__":
    main()
