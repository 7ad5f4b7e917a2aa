"""WebShop env speed and memory: steps/s of scripted policies in one process (one core), reset
time, BM25 index build (cold) vs load from the disk cache (warm), catalogue load, peak RSS.

    python benchmarks/webshop_env.py [--quick] [--json]
"""

from __future__ import annotations

import os
import random
import resource
import tempfile
import time

from _util import emit, median, parser, table


def main() -> None:
    args = parser(__doc__).parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    from eef.envs.webshop.data import load_catalogue
    cat = load_catalogue()
    load_s = time.perf_counter() - t0

    from eef.envs.webshop import search
    asins = list(cat.contents)
    texts = [cat.contents[a] for a in asins]
    with tempfile.TemporaryDirectory() as d:
        from pathlib import Path
        t0 = time.perf_counter()
        search.SearchIndex(asins, texts, cache=Path(d))
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm = search.SearchIndex(asins, texts, cache=Path(d))
        load_index_s = time.perf_counter() - t0
        assert not warm.built

    import eef.envs as envs
    from eef.policy import load_policy
    from eef.rollout.episode import run_episode
    env = envs.make("webshop")
    ids = [t.id for t in env.tasks("train")]
    random.Random(0).shuffle(ids)
    n = 100 if args.quick else 1000
    resets = []
    for tid in ids[:200]:
        t0 = time.perf_counter()
        env.reset(tid)
        resets.append(time.perf_counter() - t0)
    rows, figs = [], {}
    for name in ("oracle", "heuristic", "random"):
        pol = load_policy(f"expert:{name}", env)
        t0 = time.perf_counter()
        steps = sum(len(run_episode(env, pol, tid)) for tid in ids[:n])
        dt = time.perf_counter() - t0
        # env-only time: replay the same actions without the policy
        trajs = [run_episode(env, pol, tid) for tid in ids[: n // 4]]
        t0 = time.perf_counter()
        for tr in trajs:
            env.replay(tr.task_id, tr.actions)
        env_dt = time.perf_counter() - t0
        env_steps = sum(len(t) for t in trajs)
        rows.append([name, n, steps, steps / dt, env_steps / env_dt])
        figs[f"{name}_steps_per_s"] = steps / dt
        figs[f"{name}_env_only_steps_per_s"] = env_steps / env_dt
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table("WebShop env: episodes with a scripted policy, one process",
          ["policy", "episodes", "steps", "steps/s (policy+env)", "steps/s (env replay)"], rows)
    table("Set-up costs", ["what", "value"], [
        ["catalogue + goals load (s)", load_s], ["BM25 index build, cold (s)", build_s],
        ["BM25 index load from disk cache (s)", load_index_s],
        ["build / load ratio", build_s / max(load_index_s, 1e-9)],
        ["reset median (ms)", 1e3 * median(resets)], ["peak RSS (MB)", peak_mb]])
    figs.update({"steps_per_s": figs["heuristic_steps_per_s"], "catalogue_load_s": load_s,
                 "index_build_s": build_s, "index_load_s": load_index_s,
                 "reset_ms_median": 1e3 * median(resets), "peak_rss_mb": peak_mb})
    emit(figs, args.json)


if __name__ == "__main__":
    main()
