import random
import re

import pytest

import eef.envs as envs
from eef.envs.base import EpisodeNotStartedError, UnknownTaskError
from eef.envs.checker import BAD_ACTIONS, EnvConformanceError, check_env
from eef.policy import load_policy
from eef.rollout.episode import run_episode, summarize

pytestmark = pytest.mark.needs_data


@pytest.fixture(scope="module")
def env():
    e = envs.make("webshop")
    yield e
    e.close()


def test_goals_and_split_sizes(env):
    # 6,910 synthetic goals; product-level split: 4,690 train goals, 116 test goals
    assert len(env.tasks("all")) == 6910
    assert len(env.tasks("train")) == 4690
    assert len(env.tasks("test")) == 116
    ids = [t.id for t in env.tasks("all")]
    assert len(set(ids)) == len(ids)
    train_products = {t.meta["asin"] for t in env.tasks("train")}
    test_products = {t.meta["asin"] for t in env.tasks("test")}
    assert not train_products & test_products
    assert len(train_products) == 335 and len(test_products) == 40
    with pytest.raises(ValueError):
        env.tasks("validation")


def test_task_text_is_stable(env):
    # the goal text of a task id never changes (seeded price, seeded cap)
    t = env.task("webshop/B08ZRR3DZT/3")
    assert t.instruction == ("Find me women's dresses with polyester spandex for daily wear with "
                             "color: black, and size: large, and price lower than 50.00 dollars")
    assert t.meta["goal_options"] == {"color": "black", "size": "large"}
    assert t.split == "train"


def test_conformance(env):
    heu = load_policy("expert:heuristic", env)
    rng = random.Random(0)
    ids = rng.sample([t.id for t in env.tasks("train")], 6) + \
        rng.sample([t.id for t in env.tasks("test")], 3)
    check_env(env, ids, actions_for=lambda t: run_episode(env, heu, t).actions)


def test_checker_catches_a_broken_env(env):
    class Broken(type(env)):
        def step(self, action):
            r = super().step(action)
            r.info.pop("valid")
            return r
    b = Broken.__new__(Broken)
    b.__dict__.update(env.__dict__)
    with pytest.raises(EnvConformanceError, match="valid"):
        check_env(b, [env.tasks("test")[0].id], check_step_limit=False)


def test_pages_and_navigation(env):
    t = env.task("webshop/B08ZRR3DZT/3")
    obs = env.reset(t.id)
    assert obs.startswith("WebShop [SEP] Instruction: [SEP] Find me women's dresses")
    assert obs.endswith("[SEP] Search")
    r = env.step("search[women's dresses polyester spandex]")
    assert r.observation.startswith("Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next >")
    assert r.info["page"] == "results" and r.reward == 0.0 and not r.done
    r = env.step("click[next >]")
    assert "< Prev [SEP] Page 2 (Total results: 50)" in r.observation
    r = env.step("click[< prev]")
    assert "Page 1 (Total results: 50)" in r.observation
    asin = r.observation.split(" [SEP] ")[3]
    r = env.step(f"click[{asin.lower()}]")  # case-insensitive, as WebShop
    assert r.info["page"] == "item" and "Buy Now" in r.observation
    assert "click[description]" in env.available_actions()
    r = env.step("click[Description]")
    assert r.info["page"] == "sub" and r.observation.startswith("Back to Search [SEP] < Prev")
    r = env.step("click[< prev]")
    assert r.info["page"] == "item"
    r = env.step("click[< prev]")
    assert r.info["page"] == "results"
    r = env.step("click[back to search]")
    assert r.info["page"] == "search" and r.observation.startswith("WebShop")


def test_oracle_purchase_rewards_one(env):
    t = env.task("webshop/B08ZRR3DZT/3")
    env.reset(t.id)
    env.step("search[sheIn one shoulder dress]")
    assert env.step("click[B08ZRR3DZT]").info["page"] == "item"
    env.step("click[black]")
    env.step("click[large]")
    r = env.step("click[Buy Now]")
    assert r.done and r.reward == 1.0 and r.info["success"] is True
    assert r.info["reward_info"]["r_type"] == 1.0
    # after the end: no exception, invalid, still done, no more reward
    r2 = env.step("click[buy now]")
    assert r2.done and r2.info["valid"] is False and r2.reward == 0.0


def test_wrong_option_lowers_reward(env):
    env.reset("webshop/B08ZRR3DZT/3")
    env.step("search[sheIn one shoulder dress]")
    env.step("click[B08ZRR3DZT]")
    env.step("click[red]")
    env.step("click[large]")
    r = env.step("click[buy now]")
    assert r.done and 0 < r.reward < 1 and r.info["success"] is False


@pytest.mark.parametrize("bad", BAD_ACTIONS + ["click[not on this page]", "search[]",
                                               "dance[now]", None])
def test_invalid_actions_keep_the_page(env, bad):
    obs = env.reset("webshop/B08ZRR3DZT/3")
    r = env.step(bad)
    assert r.info["valid"] is False and not r.done and r.reward == 0.0
    assert r.observation.startswith("Invalid action: ") and r.observation.endswith(obs)
    assert r.info["steps"] == 1


def test_step_limit_ends_with_zero(env):
    e = envs.make("webshop", max_steps=3)
    e.reset("webshop/B08ZRR3DZT/3")
    rs = [e.step("search[dress]"), e.step("click[next >]"), e.step("click[next >]")]
    assert [r.done for r in rs] == [False, False, True]
    assert rs[-1].reward == 0.0 and rs[-1].info["truncated"] and not rs[-1].info["success"]
    with pytest.raises(ValueError):
        envs.make("webshop", max_steps=0)


def test_search_anywhere_option(env):
    strict = envs.make("webshop", search_anywhere=False)
    strict.reset("webshop/B08ZRR3DZT/3")
    strict.step("search[dress]")
    r = strict.step("search[shoes]")
    assert r.info["valid"] is False
    env.reset("webshop/B08ZRR3DZT/3")
    env.step("search[dress]")
    assert env.step("search[shoes]").info["valid"] is True


def test_shuffle_hits_permutes_each_page_reproducibly(env):
    shuf = envs.make("webshop", shuffle_hits=True)
    pages = {}
    for e in (env, shuf):
        e.reset("webshop/B08ZRR3DZT/3")
        first = e.step("search[dress]").observation
        second = e.step("click[next >]").observation
        pages[e] = [re.findall(r"\bB0[0-9A-Z]{8}\b", o) for o in (first, second)]
    for plain, mixed in zip(pages[env], pages[shuf]):
        assert len(plain) == 10 and sorted(plain) == sorted(mixed)
    assert pages[env] != pages[shuf]
    # the same search in the same task shows the same order; another task another one
    shuf.reset("webshop/B08ZRR3DZT/3")
    again = shuf.step("search[dress]").observation
    assert re.findall(r"\bB0[0-9A-Z]{8}\b", again) == pages[shuf][0]
    shuf.reset("webshop/B07B6DVG41/0")
    other = re.findall(r"\bB0[0-9A-Z]{8}\b", shuf.step("search[dress]").observation)
    assert sorted(other) == sorted(pages[shuf][0]) and other != pages[shuf][0]
    heu = load_policy("expert:heuristic", shuf)
    t = run_episode(shuf, heu, "webshop/B08ZRR3DZT/3")
    assert shuf.replay(t.task_id, t.actions, t.observations).match == "exact"
    shuf.close()
    for bad in ("maybe", "false", 1):  # a typo in --env-opt must not shuffle silently
        with pytest.raises(ValueError, match="shuffle_hits must be true or false"):
            envs.make("webshop", shuffle_hits=bad)


def test_errors(env):
    with pytest.raises(UnknownTaskError, match="webshop/"):
        env.reset("webshop/NOPE/0")
    fresh = envs.make("webshop")
    with pytest.raises(EpisodeNotStartedError):
        fresh.step("search[x]")
    with pytest.raises(KeyError, match="unknown env"):
        envs.make("nosuchenv")


def test_snapshot_restore(env):
    env.reset("webshop/B08ZRR3DZT/3")
    obs = env.step("search[dress]").observation
    snap = env.snapshot()
    env.step("click[next >]")
    assert env.restore(snap) == obs
    assert env.step("click[next >]").info["page"] == "results"


def test_replay_reports_match(env):
    heu = load_policy("expert:heuristic", env)
    t = run_episode(env, heu, "webshop/B08ZRR3DZT/3")
    rep = env.replay(t.task_id, t.actions, t.observations)
    assert rep.match == "exact" and rep.done
    bad = list(t.observations)
    bad[1] = "something else"
    rep = env.replay(t.task_id, t.actions, bad)
    assert rep.match == "different" and rep.first_divergence == 1
    # replaying a prefix leaves the env at state s_k
    rep = env.replay(t.task_id, t.actions[:2])
    assert rep.observation == t.observations[1] and not rep.done


@pytest.mark.slow
def test_oracle_wins_on_a_sample():
    env = envs.make("webshop")
    oracle = load_policy("expert:oracle", env)
    ids = random.Random(1).sample([t.id for t in env.tasks("all")], 300)
    s = summarize([run_episode(env, oracle, i) for i in ids])
    assert s["win_rate"] >= 0.99


@pytest.mark.slow
def test_heuristic_is_a_mediocre_expert_with_natural_failures():
    env = envs.make("webshop")
    heu = load_policy("expert:heuristic", env)
    ids = random.Random(2).sample([t.id for t in env.tasks("train")], 300)
    trajs = [run_episode(env, heu, i) for i in ids]
    s = summarize(trajs)
    assert 0.25 <= s["win_rate"] <= 0.50, s
    fails = [t for t in trajs if not t.success]
    assert all(t.steps[0].action.startswith("search[") for t in fails)  # a real query first
    assert all(s.thought for t in trajs for s in t.steps)  # ReAct thoughts
    # most failures still bought something (a wrong product / option), not random flailing
    assert sum(t.steps[-1].action == "click[buy now]" for t in fails) >= 0.8 * len(fails)


def _same_actions_as_heuristic(env, spec: str, n: int) -> list:
    """The episodes of ``spec`` on the first ``n`` train goals, checked to take the plain
    heuristic's actions (the thought options change thoughts only)."""
    ids = [t.id for t in env.tasks("train")][:n]
    plain = load_policy("expert:heuristic", env)
    other = load_policy(spec, env)
    b = [run_episode(env, other, i) for i in ids]
    assert [run_episode(env, plain, i).actions for i in ids] == [t.actions for t in b]
    return b


def test_heuristic_can_name_what_it_turns_down(env):
    b = _same_actions_as_heuristic(env, "expert:heuristic(name_rejected=True)", 40)
    backs = 0
    for t in b:
        opened = []
        for k, s in enumerate(t.steps):
            if s.action.startswith("click[") and s.action[6:-1] in env.cat.products:
                opened.append(s.action[6:-1])
            if s.action == "click[< prev]" and opened and "Back to the product" not in s.thought:
                backs += 1  # turned down from its item page: the thought names it
                assert s.thought.startswith(opened[-1]), s.thought
                nxt = t.steps[k + 1] if k + 1 < len(t.steps) else None
                if nxt is not None and nxt.action[6:-1] in env.cat.products:
                    assert nxt.thought.startswith(f"Not {opened[-1]}"), nxt.thought
    assert backs >= 3
    with pytest.raises(ValueError, match="name_rejected"):
        load_policy("expert:heuristic(name_rejected=2)", env)


def test_heuristic_can_quote_the_hit_it_picks(env):
    b = _same_actions_as_heuristic(env, "expert:heuristic(quote_pick=True)", 20)
    picks = 0
    for t in b:
        for s in t.steps:
            if s.action.startswith("click[") and s.action[6:-1] in env.cat.products:
                picks += 1
                title = env.cat.products[s.action[6:-1]]["Title"]
                assert s.thought.startswith('"' + " ".join(title.split()[:3])), s.thought
                assert s.thought.endswith(f"{s.action[6:-1]} looks closest to what I need.")
    assert picks >= 20
    with pytest.raises(ValueError, match="quote_pick"):
        load_policy("expert:heuristic(quote_pick='yes')", env)


@pytest.mark.slow
def test_random_policy_is_a_floor():
    env = envs.make("webshop")
    rnd = load_policy("expert:random", env)
    ids = [t.id for t in env.tasks("test")][:40]
    s = summarize([run_episode(env, rnd, i) for i in ids])
    assert s["win_rate"] <= 0.1
