"""Rollout engine throughput, measured against the sequential loop in the same run.

    python benchmarks/rollout.py [--quick] [--json] [--tasks N] [--skip-sciworld]

1. WebShop, one tiny model (the ``tiny`` preset, randomly initialised: every episode runs to the
   step limit), the same tasks and seeds: the sequential loop (``run_episode``: one episode at a
   time, one ``act`` per step) vs the engine (``--num-envs`` episodes in flight, one batched
   ``act`` per round).  JSON key ``speedup_vs_sequential`` (episodes/s ratio).  The same two
   loops with a scripted expert show the engine's own overhead (the policy is nearly free).
   The engine again with the policy's prefix cache off, on (the default), and on with prompts
   trimmed in blocks of 4 exchanges (JSON key ``prefix_cache_gain``: on vs off).
   The ceiling of any batched loop (JSON key ``speedup_bound``): the sequential loop's time
   over the time its work (tokens computed x linear-layer FLOPs) takes at the fp32 matmul peak
   measured in the same run.
2. ScienceWorld: one env vs a pool of worker processes (one JVM each): env steps/s and RSS per
   worker (Python worker + its JVM).
3. Starting from expert state k (replay of k recorded actions) vs from the start: WebShop with
   snapshots (one replay per env slot), WebShop replaying every episode, ScienceWorld (replay
   only: it cannot snapshot).
"""

from __future__ import annotations

import statistics
import time

from _util import emit, linear_gflop, parser, peak_gflops, table


def _tiny_model(env_name: str) -> str:
    from eef.paths import cache_dir
    from eef.presets import init_preset
    out = cache_dir() / "bench" / f"tiny-{env_name}"
    if not (out / "config.json").exists():
        init_preset("tiny", env_name, out, seed=0)
    return str(out)


def bench_webshop_model(n_tasks: int, n_seq: int, num_envs: int, max_context: int,
                        max_new: int) -> dict:
    import eef.envs as envs
    from eef.policy import Sampling, load_policy
    from eef.rollout.engine import EngineConfig, RolloutEngine, RolloutRequest
    from eef.rollout.episode import run_episode

    env = envs.make("webshop")
    tasks = [t.id for t in env.tasks("train")[:n_tasks]]
    n_seq = min(n_seq or n_tasks, n_tasks)
    sampling = Sampling(temperature=0.0, max_new_tokens=max_new)
    pol = load_policy(f"hf:{_tiny_model('webshop')}", max_context=max_context,
                      batch_size=num_envs)
    pol.act([run_episode(env, _First(), tasks[0])], sampling, [0])  # warm-up

    pol.prefix_cache.clear()  # each timed run starts with an empty prefix cache
    before = (pol.stats.prompt_tokens, pol.stats.reused_tokens, pol.stats.new_tokens)
    t0 = time.perf_counter()
    seq = [run_episode(env, pol, tid, sampling=sampling, seed=i)
           for i, tid in enumerate(tasks[:n_seq])]
    seq_s = time.perf_counter() - t0
    computed = (pol.stats.prompt_tokens - before[0]) - (pol.stats.reused_tokens - before[1])
    generated = pol.stats.new_tokens - before[2]
    seq_gflop = linear_gflop(pol.model.config, computed + generated, generated)
    peak = peak_gflops()

    reqs = [RolloutRequest(tid, sampling=sampling, seed=i) for i, tid in enumerate(tasks)]
    with _warm(RolloutEngine("webshop", pol, EngineConfig(num_envs=num_envs, progress=False)),
               tasks[0]) as eng:
        pol.prefix_cache.clear()
        t0 = time.perf_counter()
        res = eng.run(reqs)
        eng_s = time.perf_counter() - t0
    same = sum(a.actions == b.actions for a, b in zip(seq, res.trajectories))
    seq_steps = sum(len(t) for t in seq)
    eng_steps = sum(len(t) for t in res.trajectories)

    # the prefix cache (keys/values of earlier turns reused): off, on (default), on with
    # prompts trimmed in blocks of 4 exchanges (a window that stays put for several turns)
    from eef.models.decode import PrefixCache
    variants = {}
    for name, cache, block in (("cache_off", False, 1), ("cache_on", True, 1),
                               ("cache_on_trim4", True, 4)):
        pol.prefix_cache = PrefixCache() if cache else None
        pol.trim_block = block
        before = (pol.stats.prompt_tokens, pol.stats.reused_tokens)
        with _warm(RolloutEngine("webshop", pol, EngineConfig(num_envs=num_envs,
                                                              progress=False)), tasks[0]) as eng:
            t0 = time.perf_counter()
            r = eng.run(reqs)
            dt = time.perf_counter() - t0
        prompt = pol.stats.prompt_tokens - before[0]
        variants[name] = {"episodes_per_s": n_tasks / dt,
                          "steps_per_s": sum(len(t) for t in r.trajectories) / dt,
                          "reused_share": (pol.stats.reused_tokens - before[1]) / max(1, prompt),
                          "same_actions_as_engine": sum(a.actions == b.actions for a, b in
                                                        zip(r.trajectories, res.trajectories))}
    pol.prefix_cache, pol.trim_block = PrefixCache(), 1
    return {"tasks": n_tasks, "seq_tasks": n_seq, "num_envs": num_envs,
            "prefix_cache": variants,
            "prefix_cache_gain": variants["cache_on"]["steps_per_s"]
            / variants["cache_off"]["steps_per_s"],
            # the engine with the cache and block trimming against the sequential loop (its
            # episodes take other actions, so steps/s, not episodes/s)
            "trim4_engine_vs_sequential_steps": variants["cache_on_trim4"]["steps_per_s"]
            / (seq_steps / seq_s),
            "max_context": max_context, "max_new_tokens": max_new,
            "seq_episodes_per_s": n_seq / seq_s, "engine_episodes_per_s": n_tasks / eng_s,
            "seq_steps_per_s": seq_steps / seq_s, "engine_steps_per_s": eng_steps / eng_s,
            "speedup_vs_sequential": (n_tasks / eng_s) / (n_seq / seq_s),
            "same_actions": same, "act_batch_max": res.stats["act_batch_max"],
            # the sequential loop's work: tokens the model had to compute (prompt tokens not
            # taken from the prefix cache, plus generated ones) x the linear layers' FLOPs.  Any
            # loop running the same episodes does at least this work, so no batching can beat
            # the sequential time by more than its work at the matmul peak allows.
            "seq_computed_tokens": computed + generated, "seq_gflop": seq_gflop,
            "seq_gflops_per_s": seq_gflop / seq_s, "matmul_peak_gflops": peak,
            "speedup_bound": seq_s / (seq_gflop / peak)}


def _warm(eng, task_id: str):
    """Build every env of the pool (and its per-instance caches) before timing."""
    eng.pool.run([(s, "start", (task_id,)) for s in range(eng.pool.size)])
    return eng


def bench_act_scaling(batch: int, settings: list[tuple[int, int]]) -> dict:
    """Seconds per context of one ``act`` call at batch 1 vs ``batch``, for (context tokens,
    new tokens) settings: how much a batched call can gain for this model on this machine."""
    import eef.envs as envs
    from eef.policy import Sampling, load_policy
    from eef.rollout.episode import run_episode

    env = envs.make("webshop")
    tid = env.tasks("train")[0].id
    ctx = run_episode(env, _First(), tid)
    out = {}
    for max_context, max_new in settings:
        pol = load_policy(f"hf:{_tiny_model('webshop')}", max_context=max_context,
                          batch_size=batch)
        s = Sampling(max_new_tokens=max_new)
        pol.act([ctx] * batch, s, list(range(batch)))  # warm-up
        t1 = []
        for i in range(5):
            t0 = time.perf_counter()
            pol.act([ctx], s, [i])
            t1.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pol.act([ctx] * batch, s, list(range(batch)))
        tb = (time.perf_counter() - t0) / batch
        out[f"{max_context}/{max_new}"] = {"batch1_s": statistics.median(t1),
                                           f"batch{batch}_s_per_context": tb,
                                           "gain": statistics.median(t1) / tb}
    return out


class _First:
    """A trivial policy for warm-up contexts."""

    spec = "bench:first"

    def act(self, contexts, sampling=None, seeds=None):
        return ["Action: search[shoes]" for _ in contexts]


def bench_webshop_expert(n_tasks: int, num_envs: int) -> dict:
    import eef.envs as envs
    from eef.policy import load_policy
    from eef.rollout.engine import EngineConfig, RolloutEngine, RolloutRequest
    from eef.rollout.episode import run_episode

    env = envs.make("webshop")
    tasks = [t.id for t in env.tasks("train")[:n_tasks]]
    pol = load_policy("expert:heuristic", env)
    t0 = time.perf_counter()
    seq = [run_episode(env, pol, tid, seed=i) for i, tid in enumerate(tasks)]
    seq_s = time.perf_counter() - t0
    with _warm(RolloutEngine("webshop", pol, EngineConfig(num_envs=num_envs, progress=False)),
               tasks[0]) as eng:
        t0 = time.perf_counter()
        res = eng.run([RolloutRequest(t, seed=i) for i, t in enumerate(tasks)])
        eng_s = time.perf_counter() - t0
    return {"seq_episodes_per_s": n_tasks / seq_s, "engine_episodes_per_s": n_tasks / eng_s,
            "ratio": seq_s / eng_s,
            "identical": sum(a.steps == b.steps for a, b in zip(seq, res.trajectories))}


def _rss_mb(pid: int) -> float:
    import psutil
    try:
        p = psutil.Process(pid)
        return (p.memory_info().rss + sum(c.memory_info().rss
                                          for c in p.children(recursive=True))) / 2**20
    except psutil.Error:
        return float("nan")


def bench_sciworld_pool(n_tasks: int, sizes: list[int], max_steps: int) -> dict:
    import eef.envs as envs
    from eef.policy import load_policy
    from eef.rollout.engine import EngineConfig, RolloutEngine, RolloutRequest
    from eef.rollout.pool import EnvSpec

    env = envs.make("sciworld")
    tasks = [t.id for t in env.tasks("dev")][:: max(1, 194 // n_tasks)][:n_tasks]
    pol = load_policy("expert:random", env)
    for t in tasks:  # gold paths cached on disk before timing (the random expert reads them)
        env.gold_actions(t)
    reqs = [RolloutRequest(t, seed=i) for i, t in enumerate(tasks)]
    out: dict = {"tasks": n_tasks, "max_steps": max_steps, "pools": {}}
    for size in sizes:
        conf = EngineConfig(num_envs=size, backend="process", max_episode_steps=max_steps,
                            progress=False)
        t0 = time.perf_counter()
        with _warm(RolloutEngine(EnvSpec("sciworld"), pol, conf), tasks[0]) as eng:
            start_s = time.perf_counter() - t0  # worker processes + JVMs started
            res = eng.run(reqs)
            rss = [_rss_mb(p) for p in eng.pool.pids()]
        out["pools"][size] = {
            "start_s": start_s, "wall_s": res.stats["wall_s"],
            "steps_per_s": res.stats["steps_per_s"],
            "episodes_per_s": res.stats["episodes_per_s"],
            "rss_mb_per_worker": statistics.median(rss), "failed": res.stats["failed"]}
    env.close()
    base = out["pools"][sizes[0]]["steps_per_s"]
    for size in sizes:
        out["pools"][size]["speedup"] = out["pools"][size]["steps_per_s"] / base
    return out


def bench_replay(n_tasks: int, samples: int, with_sciworld: bool) -> dict:
    import eef.envs as envs
    from eef.policy import load_policy
    from eef.rollout.engine import EngineConfig, RolloutEngine, RolloutRequest
    from eef.rollout.episode import run_episode

    out: dict = {}
    env = envs.make("webshop")
    tasks = [t.id for t in env.tasks("train")[:n_tasks]]
    oracle, agent = load_policy("expert:oracle", env), load_policy("expert:random", env)
    parents = [run_episode(env, oracle, t) for t in tasks]
    parents = [p for p in parents if len(p) >= 3]

    def run(k_of, snapshots: bool) -> tuple[float, dict]:
        reqs = [RolloutRequest(p.task_id, p if k_of(p) else None, k_of(p), samples, seed=1)
                for p in parents]
        with _warm(RolloutEngine("webshop", agent, EngineConfig(
                num_envs=8, progress=False, use_snapshots=snapshots)), parents[0].task_id) as eng:
            t0 = time.perf_counter()
            res = eng.run(reqs)
            dt = time.perf_counter() - t0
        n = len(res.trajectories)
        return dt / n, {"replay_steps_per_episode":
                        sum(b.replay_steps for b in res.budgets) / n,
                        "policy_steps_per_episode":
                        sum(len(t) - t.source.start_state for t in res.trajectories) / n}

    mid = (lambda p: len(p) - 1)
    out["webshop"] = {"parents": len(parents), "samples": samples,
                      "mean_k": statistics.mean(len(p) - 1 for p in parents)}
    for name, k_of, snap in (("start", lambda p: 0, True), ("state_k_snapshot", mid, True),
                             ("state_k_replay", mid, False)):
        s, extra = run(k_of, snap)
        out["webshop"][name] = {"s_per_episode": s, **extra}
    if with_sciworld:
        sw = envs.make("sciworld")
        ids = [t.id for t in sw.tasks("dev")][::20][:4]
        t_reset, t_replay, n_act = [], [], []
        for tid in ids:
            gold = sw.gold_actions(tid)
            k = min(20, len(gold) - 1)
            for _ in range(2):
                t0 = time.perf_counter()
                sw.reset(tid)
                t_reset.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                sw.replay(tid, gold[:k])
                t_replay.append(time.perf_counter() - t0)
                n_act.append(k)
        sw.close()
        out["sciworld"] = {"tasks": len(ids), "median_k": statistics.median(n_act),
                           "reset_s": statistics.median(t_reset),
                           "replay_k_s": statistics.median(t_replay),
                           "replay_s_per_action": statistics.median(
                               (r - s) / k for r, s, k in zip(t_replay, t_reset, n_act))}
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tasks", type=int, default=None, help="WebShop tasks (default 200; quick 16)")
    p.add_argument("--seq-tasks", type=int, default=None,
                   help="tasks the sequential loop runs (the first of the same tasks; default 32, "
                        "quick 8; 0: all).  Both rates are episodes/s.")
    p.add_argument("--num-envs", type=int, default=32, help="engine episodes in flight")
    p.add_argument("--max-context", type=int, default=512, help="tiny model context (tokens)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens generated per turn")
    p.add_argument("--skip-sciworld", action="store_true", help="WebShop parts only")
    args = p.parse_args()
    n = args.tasks or (16 if args.quick else 200)
    figs: dict = {}

    n_seq = args.seq_tasks if args.seq_tasks is not None else (8 if args.quick else 32)
    m = bench_webshop_model(n, n_seq, min(args.num_envs, n), args.max_context,
                            args.max_new_tokens)
    figs["webshop_model"] = m
    figs["speedup_vs_sequential"] = m["speedup_vs_sequential"]
    a = bench_act_scaling(min(args.num_envs, n), [(args.max_context, args.max_new_tokens),
                                                  (2048, args.max_new_tokens), (192, 64)])
    figs["act_scaling"] = a
    table(f"Tiny model act() cost per context: batch 1 vs batch {min(args.num_envs, n)} "
          "(the most a batched engine can gain with this policy here)",
          ["context / new tokens", "batch 1 s", "batched s per context", "gain"],
          [[k, v["batch1_s"], v[f"batch{min(args.num_envs, n)}_s_per_context"], v["gain"]]
           for k, v in a.items()])
    e = bench_webshop_expert(n if not args.quick else 100, min(args.num_envs, n))
    figs["webshop_expert"] = e
    table(f"WebShop, same tasks and seeds: sequential loop ({m['seq_tasks']} episodes of the "
          f"tiny model) vs engine ({n} episodes, {m['num_envs']} in flight)",
          ["policy", "sequential ep/s", "engine ep/s", "ratio", "same actions"],
          [["tiny model (random init, greedy, "
            f"ctx {m['max_context']}, {m['max_new_tokens']} new tok)",
            m["seq_episodes_per_s"], m["engine_episodes_per_s"], m["speedup_vs_sequential"],
            f"{m['same_actions']}/{m['seq_tasks']}"],
           ["expert:heuristic (no model)", e["seq_episodes_per_s"], e["engine_episodes_per_s"],
            e["ratio"], f"{e['identical']}/{n if not args.quick else 100}"]])

    figs["speedup_bound"] = m["speedup_bound"]
    table("The ceiling: the sequential loop's work (tokens it computed x linear-layer FLOPs, a "
          "lower bound) against the fp32 matmul peak measured in this run",
          ["computed tokens", "GFLOP", "sequential GFLOP/s", "matmul peak GFLOP/s",
           "most any batching can gain (speedup_bound)"],
          [[m["seq_computed_tokens"], m["seq_gflop"], m["seq_gflops_per_s"],
            m["matmul_peak_gflops"], m["speedup_bound"]]])

    v = m["prefix_cache"]
    figs["prefix_cache_gain"] = m["prefix_cache_gain"]
    table(f"Engine with the policy's prefix cache (earlier turns' keys/values reused), "
          f"{n} WebShop episodes, context {m['max_context']}",
          ["variant", "engine ep/s", "steps/s", "vs cache off (steps/s)", "prompt tokens reused",
           "same actions"],
          [[k, x["episodes_per_s"], x["steps_per_s"],
            x["steps_per_s"] / v["cache_off"]["steps_per_s"],
            f"{x['reused_share']:.0%}", f"{x['same_actions_as_engine']}/{n}"]
           for k, x in v.items()])

    if not args.skip_sciworld:
        sizes = [1, 2] if args.quick else [1, 2, 4]
        s = bench_sciworld_pool(4 if args.quick else 12, sizes, 30)
        figs["sciworld_pool"] = s
        base = s["pools"][1]["steps_per_s"]
        table(f"ScienceWorld, {s['tasks']} episodes x {s['max_steps']} steps (expert:random)",
              ["worker processes", "pool start s", "steps/s", "vs 1 env",
               "RSS/worker MB (Python + JVM)"],
              [[k, v["start_s"], v["steps_per_s"], v["steps_per_s"] / base,
                v["rss_mb_per_worker"]] for k, v in s["pools"].items()])

    r = bench_replay(8 if args.quick else 40, 4, not args.skip_sciworld)
    figs["replay"] = r
    w = r["webshop"]
    rows = [[f"webshop {name}", w[name]["s_per_episode"] * 1e3,
             w[name]["replay_steps_per_episode"], w[name]["policy_steps_per_episode"]]
            for name in ("start", "state_k_snapshot", "state_k_replay")]
    if "sciworld" in r:
        sw = r["sciworld"]
        rows.append(["sciworld reset", sw["reset_s"] * 1e3, 0, "-"])
        rows.append([f"sciworld reset + replay k={sw['median_k']:.0f}", sw["replay_k_s"] * 1e3,
                     sw["median_k"], "-"])
    table(f"Start from expert state k (k = |tau|-1, mean {w['mean_k']:.1f}) vs from the start, "
          f"{w['samples']} samples per state",
          ["start", "ms per episode", "replayed steps / episode", "policy steps / episode"], rows)
    emit(figs, args.json)


if __name__ == "__main__":
    main()
