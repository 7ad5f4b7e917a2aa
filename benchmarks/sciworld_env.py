"""ScienceWorld env speed, memory and replay fidelity, measured against the package's own wrapper.

* step: eef's lean step vs ``scienceworld.ScienceWorldEnv.step`` (same actions, same run);
* reset / load medians; JVM start;
* memory: RSS of one env's JVM (eef's capped heap) vs the wrapper's default JVM, and N envs
  side by side (each its own JVM, all stepping) with their total RSS;
* gold-path generation time per task (cache bypassed): min / median / max;
* replay: record a gold episode of each of the 24 protocol tasks, replay its actions on a fresh
  load and compare observations (exact / unordered / different) and scores, with and without
  ``sort_listings``.

    python benchmarks/sciworld_env.py [--quick] [--json]
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import psutil
from _util import emit, median, parser, table

MB = 2 ** 20


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / MB


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--envs", type=int, default=6, help="envs side by side for the memory test")
    p.add_argument("--replay-variations", type=int, default=3,
                   help="dev variations per protocol task in the replay test (--quick: 1)")
    args = p.parse_args()
    from scienceworld import ScienceWorldEnv

    from eef.envs.sciworld import SciWorldEnv
    from eef.envs.sciworld import protocol as P
    from eef.envs.sciworld.gold import GoldCache
    from eef.experts.sciworld import GoldExpert

    quick = args.quick
    figs: dict[str, float] = {}

    # -- JVM start ----------------------------------------------------------------------------
    starts = []
    for _ in range(2 if quick else 3):
        e = SciWorldEnv()
        t0 = time.perf_counter()
        e.sim
        starts.append(time.perf_counter() - t0)
        e.close()
    env = SciWorldEnv()
    expert = GoldExpert(env)
    ranges = env.variation_ranges()
    tasks = P.PROTOCOL_TASKS[::4] if quick else P.PROTOCOL_TASKS
    ids = [env.task_id(t, ranges[t]["dev"][0]) for t in tasks]

    # -- load / reset / step (eef) ------------------------------------------------------------
    golds = {tid: expert.gold(tid) for tid in ids}
    loads, resets, steps = [], [], []
    for tid in ids:
        t, v = env.parse_id(tid)
        t0 = time.perf_counter()
        env.sim.load(t, v, "easy")
        loads.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        env.reset(tid)
        resets.append(time.perf_counter() - t0)
        for a in golds[tid]:
            t0 = time.perf_counter()
            r = env.step(a)
            steps.append(time.perf_counter() - t0)
            if r.done:
                break
    rss_eef = rss_mb(env.jvm_pid)

    # -- the same through the package's wrapper -----------------------------------------------
    w = ScienceWorldEnv("", envStepLimit=10 ** 6)
    w_steps, w_resets = [], []
    n_w = 6 if quick else 25
    for tid in ids[: 3 if quick else 8]:
        t, v = env.parse_id(tid)
        w.load(t, v, "easy")
        t0 = time.perf_counter()
        w.reset()
        w_resets.append(time.perf_counter() - t0)
        for a in golds[tid][:n_w]:
            t0 = time.perf_counter()
            _, _, done, _ = w.step(a)
            w_steps.append(time.perf_counter() - t0)
            if done:
                break
    rss_wrapper = rss_mb(w._gateway.java_process.pid)
    w.close()

    figs.update(jvm_start_s_median=median(starts), load_ms_median=1000 * median(loads),
                reset_ms_median=1000 * median(resets), step_ms_median=1000 * median(steps),
                wrapper_step_ms_median=1000 * median(w_steps),
                wrapper_reset_ms_median=1000 * median(w_resets),
                step_speedup=median(w_steps) / median(steps),
                rss_mb_per_env=rss_eef, rss_mb_wrapper_default_jvm=rss_wrapper)
    table("ScienceWorld step / reset (medians)", ["what", "eef", "scienceworld wrapper", "ratio"], [
        ["step (ms)", 1000 * median(steps), 1000 * median(w_steps),
         median(w_steps) / median(steps)],
        ["reset (ms)", 1000 * median(resets), 1000 * median(w_resets),
         median(w_resets) / median(resets)],
        ["load, no gold path (ms)", 1000 * median(loads), "-", "-"],
        ["JVM start (s)", median(starts), "-", "-"],
        ["JVM RSS after the episodes (MB)", rss_eef, rss_wrapper, rss_wrapper / rss_eef],
        ["steps measured", len(steps), len(w_steps), "-"]])

    # -- N envs side by side ------------------------------------------------------------------
    n = args.envs
    pool = [SciWorldEnv() for _ in range(n)]
    for e in pool:
        e._ranges = ranges
        e.sim  # start every JVM first
    t0 = time.perf_counter()
    total_steps = 0
    rng = random.Random(0)
    for rep in range(2 if quick else 8):
        for e in pool:
            tid = rng.choice(ids)
            e.reset(tid)
            for a in golds[tid]:
                total_steps += 1
                if e.step(a).done:
                    break
    wall = time.perf_counter() - t0
    rss_each = [rss_mb(e.jvm_pid) for e in pool]
    pids = [e.jvm_pid for e in pool]
    for e in pool:
        e.close()
    time.sleep(0.5)
    orphans = sum(1 for pid in pids if psutil.pid_exists(pid)
                  and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    figs.update(envs_side_by_side=n, rss_mb_total_side_by_side=sum(rss_each),
                rss_mb_max_side_by_side=max(rss_each), orphan_jvms_after_close=orphans,
                side_by_side_steps_per_s=total_steps / wall)
    table(f"{n} envs side by side (one JVM each, {total_steps} steps round-robin)",
          ["envs", "RSS total (MB)", "RSS max (MB)", "orphan JVMs after close", "steps/s"],
          [[n, sum(rss_each), max(rss_each), orphans, total_steps / wall]])

    # -- gold-path generation ------------------------------------------------------------------
    gen_tasks = [t for t in P.ALL_TASKS if "mendelian" not in t][::5] if quick else P.ALL_TASKS
    gen: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        cache = GoldCache("easy", folder=Path(d))
        for t in gen_tasks:
            t0 = time.perf_counter()
            cache.generate(env.sim, t, ranges[t]["train"][0])
            gen[t] = time.perf_counter() - t0
    g = sorted(gen.values())
    slow = max(gen, key=gen.get)
    figs.update(gold_s_min=g[0], gold_s_median=median(g), gold_s_max=g[-1])
    table("Gold-path generation (first train variation, cache bypassed)",
          ["tasks", "min (s)", "median (s)", "max (s)", "slowest task"],
          [[len(g), g[0], median(g), g[-1], slow]])

    # -- replay fidelity -----------------------------------------------------------------------
    rows = []
    k = 1 if quick else args.replay_variations
    rids = [env.task_id(t, v) for t in tasks for v in ranges[t]["dev"][:k]]
    golds.update({tid: expert.gold(tid) for tid in rids if tid not in golds})
    for sort, retries in ((True, 0), (False, 0), (True, 2)):
        e = SciWorldEnv(sort_listings=sort, replay_retries=retries)
        e._ranges = ranges
        counts = {"exact": 0, "unordered": 0, "different": 0}
        score_agree = 0
        for tid in rids:
            e.reset(tid)
            rec = []
            for a in golds[tid]:
                r = e.step(a)
                rec.append(r)
                if r.done:
                    break
            acts = golds[tid][: len(rec)]
            rep = e.replay(tid, acts, [r.observation for r in rec])
            counts[rep.match] += 1
            score_agree += [r.info["raw_score"] for r in rep.results] == \
                [r.info["raw_score"] for r in rec]
        e.close()
        key = ("sorted" if sort else "raw") + (f"_retries{retries}" if retries else "")
        figs.update({f"replay_{key}_{k}": v for k, v in counts.items()})
        figs[f"replay_{key}_score_agree"] = score_agree
        rows.append([f"sort_listings={sort}, replay_retries={retries}", len(rids),
                     counts["exact"], counts["unordered"],
                     counts["different"], score_agree])
    figs["replay_episodes"] = len(rids)
    table(f"Replay of a recorded gold episode on a fresh load ({k} dev variation(s) per task)",
          ["observations", "tasks", "exact", "unordered", "different", "scores agree"], rows)
    # the main env has now run every section, gold paths of all 30 tasks included; budget
    # each env at the largest RSS seen in this run
    figs["rss_mb_per_env_after_all"] = rss_mb(env.jvm_pid)
    worst = max(rss_each + [rss_eef, figs["rss_mb_per_env_after_all"]])
    total_gb = psutil.virtual_memory().total / 2 ** 30
    figs["envs_per_machine"] = int(0.8 * total_gb * 1024 / worst)
    table("Memory per env", ["main env after the episodes (MB)", "after everything (MB)",
                             "heap cap (MB)", "largest RSS seen (MB)", "machine RAM (GB)",
                             "envs per machine (80% of RAM)"],
          [[figs["rss_mb_per_env"], figs["rss_mb_per_env_after_all"], env.config.heap_mb,
            worst, total_gb, figs["envs_per_machine"]]])
    env.close()
    emit(figs, args.json)


if __name__ == "__main__":
    main()
