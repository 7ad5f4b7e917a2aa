"""CPU training throughput of the tiny preset: tokens/s and model-FLOP utilisation (MFU).

    python benchmarks/train.py [--quick] [--json] [--steps N] [--threads N]

The peak is measured in the same run: the median GFLOP/s of fp32 square matmuls (512, 1024 and
2048; the best size counts).  Data: synthetic WebShop-shaped trajectories (a task page, 4 steps
of ~60-word observations, ~10% of the tokens are trained action tokens), batches of 16.
Compared, on the same batches and optimizer:

* ``eef train_sft``: the masked loss of ``eef.models.train`` (LM head on trained positions only);
* ``HF labels``: the plain ``model(input_ids, labels=...)`` loss (logits for every position).

FLOPs: ``standard`` = 6 x (all parameters incl. the LM head) per token + attention (the usual
MFU convention); ``executed`` = what the step really computes (``flops_per_example``: the head
only where the loss needs it).  JSON keys ``mfu``, ``mfu_executed``, ``tokens_per_s``,
``hf_mfu``, ``hf_tokens_per_s``, ``peak_gflops``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from _util import emit, linear_params, parser, peak_gflops, table

WORDS = ("men women shoes shirt dress cotton leather size small medium large black white red "
         "blue price results page next back buy now color options features description review "
         "waterproof running casual slim fit pack oz inch long sleeve").split()


def synthetic_trajectories(n: int, seed: int = 0):
    from eef.trajectory import Step, Trajectory
    rng = random.Random(seed)

    def asin() -> str:
        return "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))

    def page() -> str:
        hits = [f"{asin()} [SEP] " + " ".join(rng.choice(WORDS) for _ in range(8))
                + f" [SEP] ${rng.randint(5, 90)}.99" for _ in range(5)]
        return " [SEP] ".join(["Back to Search", "Page 1 (Total results: 50)", *hits])

    out = []
    for i in range(n):
        goal = " ".join(rng.choice(WORDS) for _ in range(12))
        steps = [Step(f"search[{goal[:40]}]", page(), "I search for the item"),
                 Step(f"click[{asin()}]", page(), "This one matches"),
                 Step(f"click[{rng.choice(WORDS)}]", page(), ""),
                 Step("click[buy now]", "Thank you for shopping", "")]
        out.append(Trajectory(f"s{i}", "webshop", goal, f"Instruction: [SEP] {goal} [SEP] Search",
                              steps, 1.0, True, True))
    return out


def standard_flops(cfg, n_tokens: int) -> float:
    params = sum(linear_params(cfg))
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    return 6 * n_tokens * params + 3 * L * 2 * n_tokens * n_tokens * d


def hf_baseline(model_dir: Path, examples, batches, pad: int, lr: float) -> tuple[float, int, float]:
    """Seconds, tokens and standard FLOPs of plain HF-loss steps on the same batches."""
    from transformers import AutoModelForCausalLM

    from eef.models.train import micro_batches
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    tokens, flops, secs = 0, 0.0, 0.0
    for bi, batch in enumerate(batches):
        t0 = time.perf_counter()
        for ids, att, lab in micro_batches(examples, batch, 16384, pad):
            out = model(input_ids=ids, attention_mask=att, labels=lab)
            out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if bi:  # the first step warms up
            secs += time.perf_counter() - t0
            n = [len(examples[i].input_ids) for i in batch]
            tokens += sum(n)
            flops += sum(standard_flops(model.config, k) for k in n)
    return secs, tokens, flops


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.quick:
        a.steps = 4
    if a.threads:
        torch.set_num_threads(a.threads)
    from eef.models.format import ChatFormat, build_examples
    from eef.presets import init_preset
    from eef.models.hparams import TrainConfig
    from eef.models.train import epoch_batches, flops_per_example, train_sft
    from eef.trajectory import write_jsonl

    peak = peak_gflops()
    trajs = synthetic_trajectories(16 * (a.steps + 1))
    tmp = Path(tempfile.mkdtemp(prefix="eef-bench-train-"))
    texts = [t.initial_observation + " " + " ".join(s.turn + " " + s.observation
                                                    for s in t.steps) for t in trajs]
    model_dir = init_preset("tiny", None, tmp / "tiny", texts=texts, seed=0)
    write_jsonl(tmp / "data.jsonl", trajs)
    cfg = TrainConfig(lr=1e-3, max_steps=a.steps + 1, batch_size=16, max_tokens=1024,
                      save_every=10**9, warmup_ratio=0.0)
    from transformers import AutoConfig, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    mcfg = AutoConfig.from_pretrained(model_dir)
    examples, _ = build_examples(trajs, ChatFormat(tok), cfg.max_tokens)
    batches = epoch_batches(examples, cfg.batch_size, cfg.seed, 0)[:a.steps + 1]

    # eef: time every step after the first (warm-up) from the training log's wall clock
    t_steps: list[float] = []
    import eef.models.train as T
    orig = T.micro_batches

    def timed(*args, **kw):
        t_steps.append(time.perf_counter())
        return orig(*args, **kw)
    T.micro_batches = timed
    try:
        res = train_sft(str(model_dir), tmp / "data.jsonl", tmp / "out", cfg, progress=False)
    finally:
        T.micro_batches = orig
    secs = t_steps[-1] - t_steps[1]  # steps 1 .. n-1 (the last step's end is not stamped)
    used = batches[1:-1]
    tokens = sum(len(examples[i].input_ids) for b in used for i in b)
    executed = sum(flops_per_example(mcfg, len(examples[i].input_ids), examples[i].n_trained)
                   for b in used for i in b)
    standard = sum(standard_flops(mcfg, len(examples[i].input_ids)) for b in used for i in b)
    hf_secs, hf_tokens, hf_flops = hf_baseline(model_dir, examples, batches[:-1],
                                               int(tok.pad_token_id), cfg.lr)
    trained_share = sum(e.n_trained for e in examples) / sum(len(e.input_ids) for e in examples)
    mean_len = statistics.mean(len(e.input_ids) for e in examples)
    fig = {"peak_gflops": peak, "threads": torch.get_num_threads(),
           "tokens_per_s": tokens / secs, "mfu": standard / secs / 1e9 / peak,
           "mfu_executed": executed / secs / 1e9 / peak,
           "hf_tokens_per_s": hf_tokens / hf_secs, "hf_mfu": hf_flops / hf_secs / 1e9 / peak,
           "speedup_vs_hf": (tokens / secs) / (hf_tokens / hf_secs),
           "steps_timed": len(used), "batch": cfg.batch_size, "mean_seq_tokens": mean_len,
           "trained_token_share": trained_share, "final_loss": res["losses"][-1]}
    table(f"SFT on the tiny preset: batch 16, mean {mean_len:.0f} tokens/sequence, "
          f"{trained_share:.0%} trained tokens, {torch.get_num_threads()} threads, "
          f"matmul peak {peak:.1f} GFLOP/s",
          ["loop", "tokens/s", "MFU (standard)", "MFU (executed)"],
          [["eef train_sft (masked head)", fig["tokens_per_s"], fig["mfu"], fig["mfu_executed"]],
           ["HF labels loss (all logits)", fig["hf_tokens_per_s"], fig["hf_mfu"], fig["hf_mfu"]]])
    emit(fig, a.json)


if __name__ == "__main__":
    main()
