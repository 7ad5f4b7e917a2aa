"""Does the pre-trained tiny preset read and copy?  Build time, copy rate, pick accuracy.

    python benchmarks/tiny_preset.py [--quick] [--json] [--sft-steps N] [--fresh] [--id-aliases]
                                     [--arms A,B] [--queries K] [--shuffle P]

1. Build the pre-trained preset (``eef.presets.build_preset("tiny", "webshop")``;
   cached per machine, and a build that differs only in its main phase reuses a cached
   warm-up: ``--fresh`` builds everything into a temporary directory to time it).
2. Held-out pages: for each TEST goal, the results page of the oracle's first search (the
   instruction's product phrase; "first pages"), and with ``--queries K`` (default 3) also the
   pages of K searches with random words of that phrase that list the target ("wider": goals
   of one product share a first page, so the first pages are few distinct ones).
   ``copy_rate`` = share of greedy turns whose action is ``click[<an ASIN listed on that
   page>]``, exactly.
3. SFT on the oracle's pick turns of TRAIN goals (results page -> ``click[target]``, the first
   pages and the K-query pages listing the target; ``--shuffle P``: that share of them with
   the hits in a random order), then ``pick_accuracy`` on the test pages listing the target,
   against clicking the first hit, the page-reading rule of ``probes.picks.rule_pick``
   (hits under the price cap, then the best title-word overlap) and ``PageRanker`` (a
   conditional logit on hand features of the hits, fit on the same train pages) there, and
   the ranker on the titles and prices alone and on the position alone.
4. The same SFT budget from the preset with NO pre-training (random initialisation, same
   tokenizer), so the benefit is measured in the same run.
5. With ``--id-aliases``, also the SFT of step 3 with per-page identifier aliases
   (``train.id_aliases``, docs/models.md): the model writes ``click[#k]``, mapped back to the
   page's k-th ASIN before it is scored.

``--quick`` uses a small build and SFT budget (minutes; the figures then only check the path).
JSON keys: ``build_minutes``, ``build_cached``, ``pretrain_steps``, ``pretrain_tokens``,
``copy_rate_pretrained``, and per model (``pretrained``, ``scratch``) ``copy_rate``,
``pick_accuracy``, ``pick_accuracy_wider``, ``sft_minutes`` (and ``aliases`` with
``--id-aliases``); ``first_hit``, ``rule_pick``, ``ranker_pick`` (and their ``*_wider``),
``ranker_ablation`` (``words+price`` / ``position``: ``first_pages``, ``wider``),
``test_pages``, ``test_pages_with_target``, ``wider_pages_with_target``, ``sft_examples``,
``load_avg``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from _util import emit, parser, table

QUICK_BUILD = dict(short_drills=640, warmup_steps=10, short_replay=64, lookup_drills=64,
                   explore_episodes=8, pick_tasks=100, steps=16, batch_size=16, max_hits=4,
                   save_every=8)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sft-steps", type=int, default=None, help="SFT steps (default 150; quick 20)")
    p.add_argument("--sft-batch", type=int, default=None, help="SFT batch size (16; quick 8)")
    p.add_argument("--pages", type=int, default=None,
                   help="evaluate on the first N test goals (default all; quick 40)")
    p.add_argument("--fresh", action="store_true",
                   help="build into a temporary directory (times a full build; cache untouched)")
    p.add_argument("--options", default="{}", help="JSON of build options (PretrainConfig)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1: much faster than 2 on a busy 2-core machine)")
    p.add_argument("--no-scratch", action="store_true",
                   help="skip the SFT from the not pre-trained preset (the comparison arm)")
    p.add_argument("--id-aliases", action="store_true",
                   help="also SFT the pre-trained preset with per-page identifier aliases")
    p.add_argument("--arms", default=None,
                   help="comma-separated SFT arms to run, of pretrained, scratch, aliases "
                        "(default: pretrained and scratch, as --no-scratch / --id-aliases say)")
    p.add_argument("--queries", type=int, default=None,
                   help="extra searches per goal for the train and wider test pages (3; quick 1)")
    p.add_argument("--shuffle", type=float, default=0.0,
                   help="share of SFT pages shown with their hits in a random order")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)

    from eef.envs.webshop import WebShopEnv
    from eef.presets import INFO_FILE, build_preset, init_preset
    from probes.picks import PageRanker, evaluate_picks, shuffled_hits, webshop_pick_pages
    from eef.models.hparams import TrainConfig
    from eef.models.train import train_sft

    progress = not a.no_progress
    chosen = a.arms.split(",") if a.arms else (
        ["pretrained"] + ([] if a.no_scratch else ["scratch"])
        + (["aliases"] if a.id_aliases else []))
    if not chosen or set(chosen) - {"pretrained", "scratch", "aliases"}:
        p.error(f"--arms: choose among pretrained, scratch, aliases (got {a.arms!r})")
    opts = {**(QUICK_BUILD if a.quick else {}), **json.loads(a.options)}
    sft_steps = a.sft_steps if a.sft_steps is not None else (12 if a.quick else 150)
    sft_batch = a.sft_batch or (8 if a.quick else 16)
    n_pages = a.pages if a.pages is not None else (40 if a.quick else None)
    queries = a.queries if a.queries is not None else (1 if a.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="eef-tiny-preset-"))
    load = [os.getloadavg()[0]]
    try:
        t0 = time.time()
        out = tmp / "preset" if (a.fresh or a.quick) else None
        path = build_preset("tiny", "webshop", out=out, progress=progress, threads=a.threads,
                            reuse_warmup=not a.fresh, **opts)
        build_s = time.time() - t0
        info = json.loads((path / INFO_FILE).read_text())["pretraining"]
        cached = build_s < 60 and out is None
        load.append(os.getloadavg()[0])

        env = WebShopEnv()
        test = webshop_pick_pages(env, "test", limit=n_pages)
        wider = [pg for pg in webshop_pick_pages(env, "test", limit=n_pages, queries=queries,
                                                 seed=1) if pg.target_listed]
        train = [pg for pg in webshop_pick_pages(env, "train", queries=queries)
                 if pg.target_listed]
        random.Random(0).shuffle(train)
        ranker = PageRanker().fit(train)
        # what the page carries without the position, and the position alone
        parts = {"words+price": PageRanker(groups=("words", "price")).fit(train),
                 "position": PageRanker(groups=("position",)).fit(train)}
        ablation = {k: {"first_pages": rk.accuracy(test), "wider": rk.accuracy(wider)}
                    for k, rk in parts.items()}
        rng = random.Random(1)
        sft_data = [shuffled_hits(pg.sft_example(), rng) if rng.random() < a.shuffle
                    else pg.sft_example() for pg in train]
        with_target = [pg for pg in test if pg.target_listed]

        def probe(model: str) -> tuple[dict, dict]:
            return (evaluate_picks(model, test, ranker=ranker),
                    evaluate_picks(model, wider, ranker=ranker))

        r_pre, w_pre = probe(str(path))
        scratch = init_preset("tiny", "webshop", tmp / "scratch", seed=info["options"]["seed"])
        cfg = TrainConfig(lr=1e-3, max_steps=sft_steps, batch_size=sft_batch,
                          max_tokens=1536, warmup_ratio=0.05, save_every=10 ** 9)
        res = {}
        arms = [("pretrained", path, cfg), ("scratch", scratch, cfg),
                ("aliases", path, dataclasses.replace(cfg, id_aliases=True))]
        arms = [arm for arm in arms if arm[0] in chosen]
        for name, base, arm_cfg in arms:
            t1 = time.time()
            train_sft(str(base), sft_data, tmp / f"sft-{name}", arm_cfg, progress=progress)
            minutes = (time.time() - t1) / 60
            r, w = probe(str(tmp / f"sft-{name}"))
            res[name] = {"copy_rate": r["copy_rate"], "pick_accuracy": r["pick_accuracy"],
                         "pick_accuracy_wider": w["pick_accuracy"],
                         "sft_minutes": round(minutes, 2), "examples": r["examples"][:3]}
            load.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    labels = {"pretrained": "pre-trained + SFT", "scratch": "no pre-training + SFT",
              "aliases": "pre-trained + SFT with identifier aliases"}
    table(f"tiny preset, WebShop: {len(test)} test first pages ({len(with_target)} list the "
          f"target, {r_pre['distinct_pages']} distinct), {len(wider)} wider test pages listing "
          f"the target ({w_pre['distinct_pages']} distinct); SFT {sft_steps} steps x {sft_batch} "
          f"on {len(sft_data)} train picks (shuffled hits: {a.shuffle:.0%})",
          ["model", "copy rate (first pages)", "pick accuracy (first pages)",
           "pick accuracy (wider)", "SFT min"],
          [["pre-trained, no SFT", f"{r_pre['copy_rate']:.1%}",
            f"{r_pre['pick_accuracy']:.1%}", f"{w_pre['pick_accuracy']:.1%}", "-"],
           *[[labels[k], f"{v['copy_rate']:.1%}", f"{v['pick_accuracy']:.1%}",
              f"{v['pick_accuracy_wider']:.1%}", v["sft_minutes"]] for k, v in res.items()],
           ["click the first hit", "100%", f"{r_pre['first_hit']:.1%}",
            f"{w_pre['first_hit']:.1%}", "-"],
           ["page-reading rule (price cap, then title words)", "100%",
            f"{r_pre['rule_pick']:.1%}", f"{w_pre['rule_pick']:.1%}", "-"],
           ["page ranker (19 hand features, fit on the train pages)", "100%",
            f"{r_pre['ranker_pick']:.1%}", f"{w_pre['ranker_pick']:.1%}", "-"],
           ["page ranker, titles and prices only (no position)", "100%",
            f"{ablation['words+price']['first_pages']:.1%}",
            f"{ablation['words+price']['wider']:.1%}", "-"],
           ["page ranker, position only", "100%", f"{ablation['position']['first_pages']:.1%}",
            f"{ablation['position']['wider']:.1%}", "-"]])
    table("build", ["what", "value"],
          [["build minutes (this call)", f"{build_s / 60:.1f}" + (" (cached)" if cached else "")],
           ["pre-training steps / minutes", f"{info['steps']} / {info['train_minutes']}"
            + (" (warm-up reused from the cache)" if info.get("warmup_reused") else "")],
           ["pre-training tokens (trained)", f"{info['tokens']:,} ({info['trained_tokens']:,})"],
           ["corpus", json.dumps(info["corpus"])],
           ["load average (1 min) during the run", " ".join(f"{x:.1f}" for x in load)]])
    emit({"build_minutes": round(build_s / 60, 2), "build_cached": cached,
          "pretrain_minutes": info["train_minutes"], "pretrain_steps": info["steps"],
          "pretrain_tokens": info["tokens"], "warmup_reused": info.get("warmup_reused", False),
          "copy_rate_pretrained": r_pre["copy_rate"],
          "pick_accuracy_pretrained_no_sft": r_pre["pick_accuracy"],
          **{k: {x: y for x, y in v.items() if x != "examples"} for k, v in res.items()},
          "first_hit": r_pre["first_hit"], "rule_pick": r_pre["rule_pick"],
          "ranker_pick": r_pre["ranker_pick"], "first_hit_wider": w_pre["first_hit"],
          "rule_pick_wider": w_pre["rule_pick"], "ranker_pick_wider": w_pre["ranker_pick"],
          "ranker_ablation": ablation,
          "test_pages": len(test), "test_pages_with_target": len(with_target),
          "distinct_test_pages": r_pre["distinct_pages"],
          "wider_pages_with_target": len(wider), "distinct_wider_pages": w_pre["distinct_pages"],
          "sft_examples": len(sft_data), "queries": queries, "shuffle": a.shuffle,
          "sft_steps": sft_steps, "sft_batch": sft_batch, "quick": a.quick, "threads": a.threads,
          "load_avg": load}, a.json)


if __name__ == "__main__":
    main()
