"""ScienceWorld text for the tiny preset: cost of the corpora and what the tokenizer makes of it.

* tokenizer corpus (``sciworld_texts``): generation time, texts, characters; BPE training time
  (the tiny preset's 4,096 pieces);
* tokens per ``look around`` observation of the **test** variations' start rooms (median, p90)
  with that tokenizer, against the WebShop preset tokenizer (trained on the catalogue) and
  characters, in the same run; tokens per object name and per copy-task action;
* pre-training corpus (``sciworld_corpus``) generation time per part: ``explore_episodes``,
  ``lookup_drills``, ``pick_tasks`` (sequences/s), and tokens per sequence;
* the copy probe (``evaluate_object_copies``) of the randomly initialised tiny preset on test
  pages: the floor a pre-trained preset must clear.

    python benchmarks/sciworld_text.py [--quick] [--json]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from _util import emit, median, parser, table


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.9 * len(xs)))] if xs else float("nan")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--explore", type=int, default=200, help="explore_episodes (--quick: 10)")
    p.add_argument("--drills", type=int, default=2000, help="lookup_drills and pick_tasks "
                   "(--quick: 200)")
    p.add_argument("--pages", type=int, default=48, help="test pages of the copy probe")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)

    from eef.envs.sciworld import SciWorldEnv
    from eef.models.format import trajectory_messages
    from eef.presets import PRESETS, PretrainConfig, init_preset, train_tokenizer
    from eef.presets import sciworld, webshop
    from probes.objects import evaluate_object_copies, sciworld_object_pages

    quick = args.quick
    n_explore, n_drills = (10, 200) if quick else (args.explore, args.drills)
    per_task = 3 if quick else 10
    figs: dict[str, float] = {}
    env = SciWorldEnv()
    env.splits()
    env.reset(env.task_id(*env.splits()["train"][0]))  # JVM started before any timing

    # -- tokenizer corpus and tokenizer -----------------------------------------------------
    t0 = time.perf_counter()
    texts = list(sciworld.texts(env=env, variations_per_task=per_task, progress=False))
    figs["texts_seconds"] = time.perf_counter() - t0
    figs["texts"] = len(texts)
    figs["texts_chars"] = sum(map(len, texts))
    vocab = PRESETS["tiny"].vocab_size
    t0 = time.perf_counter()
    tok = train_tokenizer(texts, vocab)
    figs["tokenizer_seconds"] = time.perf_counter() - t0
    figs["tokenizer_vocab"] = len(tok)

    # -- test look-arounds ------------------------------------------------------------------
    import random
    test = env.splits()["test"]
    looks, names = [], set()
    for pair in (test[::4] if quick else test):
        v = sciworld.visit(env, pair, 0, random.Random(0))
        looks.append(v.rooms[0].look)
        names |= set(v.rooms[0].listed)
    tokenizers = {"sciworld preset": tok}
    try:
        tokenizers["webshop preset"] = train_tokenizer(
            webshop.texts(None), vocab, list(webshop.CURRICULUM.extra_tokens),
            identifiers=webshop.identifiers(None))
    except Exception as e:  # no WebShop data: the comparison row is left out
        print(f"(webshop tokenizer skipped: {type(e).__name__}: {e})")
    rows = []
    for label, tk in tokenizers.items():
        counts = [len(tk(x, add_special_tokens=False)["input_ids"]) for x in looks]
        name_t = [len(tk(" " + n, add_special_tokens=False)["input_ids"]) for n in sorted(names)]
        key = label.split()[0]
        figs[f"look_tokens_median_{key}"] = median(counts)
        figs[f"look_tokens_p90_{key}"] = p90(counts)
        figs[f"name_tokens_mean_{key}"] = statistics.mean(name_t)
        rows.append([label, len(looks), median(counts), p90(counts),
                     median([len(x) for x in looks]) / median(counts),
                     statistics.mean(name_t)])
    rows.append(["characters", len(looks), median([len(x) for x in looks]),
                 p90([len(x) for x in looks]), 1.0, statistics.mean(map(len, names))])
    figs["look_chars_median"] = median([len(x) for x in looks])
    table(f"test start-room look-arounds ({len(looks)}) and their {len(names)} object names",
          ["tokenizer", "looks", "tokens median", "tokens p90", "chars/token",
           "tokens per name"], rows)

    # -- pre-training corpus ----------------------------------------------------------------
    from dataclasses import fields
    has_short = "short_drills" in {f.name for f in fields(PretrainConfig)}
    zero = {"explore_episodes": 0, "lookup_drills": 0, "pick_tasks": 0, "warmup_steps": 0,
            **({"short_drills": 0} if has_short else {})}
    parts = [("explore", {"explore_episodes": n_explore}), ("lookup", {"lookup_drills": n_drills}),
             ("pick", {"pick_tasks": n_drills})]
    if has_short:
        parts.insert(1, ("lookup_short", {"short_drills": n_drills}))
    rows = []
    for name, opts in parts:
        cfg = PretrainConfig.from_options({**zero, **opts})
        t0 = time.perf_counter()
        trajs = list(sciworld.corpus(cfg, env=env, progress=False))
        sec = time.perf_counter() - t0
        lens = [len(tok(tok.apply_chat_template(trajectory_messages(t), tokenize=False),
                        add_special_tokens=False)["input_ids"]) for t in trajs]
        trained = sum(s.train for t in trajs for s in t.steps)
        figs[f"corpus_{name}_seconds"] = sec
        figs[f"corpus_{name}_sequences"] = len(trajs)
        figs[f"corpus_{name}_tokens_median"] = median(lens)
        rows.append([name, len(trajs), round(sec, 1), len(trajs) / sec, median(lens), p90(lens),
                     trained])
    table("sciworld_corpus by part (one JVM, 1 thread)",
          ["part", "sequences", "seconds", "seq/s", "tokens median", "tokens p90",
           "trained actions"], rows)

    # -- copy probe floor -------------------------------------------------------------------
    pages = sciworld_object_pages(env, "test", limit=args.pages // (4 if quick else 1))
    env.close()
    with tempfile.TemporaryDirectory() as d:
        init_preset("tiny", None, d, texts=texts)
        t0 = time.perf_counter()
        res = evaluate_object_copies(d, pages, max_new_tokens=24)
        figs["probe_seconds"] = time.perf_counter() - t0
    figs["probe_pages"] = res["pages"]
    figs["random_init_copy_rate"] = res["copy_rate"]
    table("copy probe on test start rooms", ["model", "pages", "copy rate", "target rate",
                                             "seconds"],
          [["tiny preset, random init", res["pages"], res["copy_rate"], res["target_rate"],
            round(figs["probe_seconds"], 1)]])
    table("tokenizer corpus", ["variations per task", "texts", "chars", "seconds",
                               "BPE seconds"],
          [[per_task, figs["texts"], figs["texts_chars"], round(figs["texts_seconds"], 1),
            round(figs["tokenizer_seconds"], 1)]])
    emit({k: round(v, 4) if isinstance(v, float) else v for k, v in figs.items()}, args.json)


if __name__ == "__main__":
    main()
