"""The research probes of the tiny preset (benchmarks/probes): pick pages, reference pickers."""

from __future__ import annotations

import random

import pytest

from probes import ProbeError
from probes.picks import (PageRanker, PickPage, evaluate_picks, rank_bonus, rank_pmi_index,
                          rule_pick, shuffled_hits, webshop_pick_pages)


@pytest.fixture(scope="module")
def env():
    from eef.envs.webshop import WebShopEnv
    return WebShopEnv()


@pytest.mark.needs_data
def test_pick_probe_scores_policies(env):
    from eef.experts import make_expert
    pages = webshop_pick_pages(env, "test", limit=12)
    assert pages and all(p.context.steps[-1].action.startswith("search[") for p in pages)
    with_target = [p for p in pages if p.target_listed]
    assert with_target
    oracle = make_expert(env, "oracle")
    r = evaluate_picks(oracle, with_target)
    assert r["copy_rate"] == 1.0 and r["pick_accuracy"] == 1.0
    assert r["first_hit"] == sum(p.listed[0] == p.target for p in with_target) / len(with_target)
    assert r["rule_pick"] == sum(rule_pick(p) == p.target for p in with_target) / len(with_target)
    assert all(rule_pick(p) in p.listed for p in pages)
    ex = with_target[0].sft_example()
    assert [s.train for s in ex.steps] == [False, True] and ex.steps[-1].action.startswith("click[")


def test_rule_pick_reads_prices_and_titles():
    from eef.envs.webshop.env import SEP
    from eef.trajectory import Step, Trajectory

    def page(instruction: str, hits: list[tuple[str, str, str]]) -> PickPage:
        obs = SEP.join(["Back to Search", "Page 1 (Total results: 3)", "Next >",
                        *[x for h in hits for x in h]])
        ctx = Trajectory("t", "webshop", instruction, "WebShop",
                         [Step("search[x]", obs, train=False)])
        return PickPage(ctx, [h[0] for h in hits], hits[0][0], Step("click[x]", ""))

    hits = [("B000000001", "Red Leather Shoes", "$10.00"),
            ("B000000002", "Blue Cotton Shirt for Men", "$45.00"),
            ("B000000003", "Blue Cotton Shirt", "$20.00 to $25.00")]
    capped = "i need a blue cotton shirt for men, and price lower than 30.00 dollars"
    assert rule_pick(page(capped, hits)) == "B000000003"  # the better title is over the cap
    assert rule_pick(page("i need a blue cotton shirt for men", hits)) == "B000000002"
    # nothing under the cap: titles decide among all hits; ties go to the higher hit
    assert rule_pick(page("i need shoes, and price lower than 5.00 dollars", hits)) == "B000000001"
    assert rule_pick(page("i need a hat", hits)) == "B000000001"
    bad = page("i need a hat", hits)
    bad.context.steps[-1].observation = "WebShop [SEP] Instruction: [SEP] x [SEP] Search"
    with pytest.raises(ProbeError, match="results"):
        rule_pick(bad)


@pytest.mark.needs_data
def test_pick_pages_from_more_queries(env):
    first = webshop_pick_pages(env, "test", limit=8)
    more = webshop_pick_pages(env, "test", limit=8, queries=3, seed=1)
    assert more[:1][0].context.steps[-1].action == first[0].context.steps[-1].action
    extra = [p for p in more if not p.context.steps[-1].action.startswith("search[find me")]
    assert extra and all(p.target_listed for p in extra)
    keys = [(p.context.steps[-1].observation, p.context.instruction) for p in extra]
    assert len(set(keys)) == len(keys)
    for p in extra:  # 2-8 words of the instruction's product phrase
        q = p.context.steps[-1].action[len("search["):-1].split()
        assert 1 <= len(q) <= 8 and all(w in p.context.instruction.lower() for w in q)
    again = webshop_pick_pages(env, "test", limit=8, queries=3, seed=1)
    assert [p.context.steps[-1].action for p in again] == [p.context.steps[-1].action
                                                            for p in more]


@pytest.mark.needs_data
def test_pick_pages_of_chosen_goals(env):
    ids = [t.id for t in env.tasks("test")[:8]]
    some = webshop_pick_pages(env, "test", only=[ids[5], ids[2]])
    assert [p.context.task_id for p in some] == [ids[2], ids[5]]  # the split's order
    assert [p.context.task_id for p in webshop_pick_pages(env, "test", limit=1,
                                                          only=[ids[5], ids[2]])] == [ids[2]]
    with pytest.raises(ProbeError, match="not in test"):
        webshop_pick_pages(env, "test", only=[ids[0], "no-such-goal"])


def test_rank_weighed_against_title_pmi():
    import math
    assert rank_bonus(3, 2.0, "log") == pytest.approx([0.0, -2 * math.log(2), -2 * math.log(3)])
    assert rank_bonus(3, 2.0, "first") == [2.0, 0.0, 0.0]
    with pytest.raises(ProbeError, match="'log' or 'first'"):
        rank_bonus(3, 1.0, "last")
    pmi, prices = [1.0, 2.5, 0.0], ["$10.00", "$12.00", "$5.00"]
    ins = "i want a red mug, and price lower than 20.00 dollars"
    assert rank_pmi_index(pmi, ins, prices, 0.0) == 1  # the title alone
    assert rank_pmi_index(pmi, ins, prices, 1.0) == 1  # 2.5 - ln 2 > 1.0
    assert rank_pmi_index(pmi, ins, prices, 3.0) == 0  # 2.5 - 3 ln 2 < 1.0
    assert rank_pmi_index(pmi, ins, prices, 1.0, "first") == 1  # 2.5 > 1 + 1
    assert rank_pmi_index(pmi, ins, prices, 2.0, "first") == 0  # 1 + 2 > 2.5
    cheap = "i want a red mug, and price lower than 11.00 dollars"
    assert rank_pmi_index(pmi, cheap, prices, 0.0) == 0  # hit 1 is over the cap
    assert rank_pmi_index(pmi, cheap, prices, 1e6) == 0


@pytest.mark.needs_data
def test_shuffled_hits_keep_the_page_and_the_pick(env):
    from eef.experts.webshop import parse_page
    page = next(p for p in webshop_pick_pages(env, "test", limit=20) if p.target_listed)
    ex = page.sft_example()
    orders = set()
    for seed in range(6):
        sh = shuffled_hits(ex, random.Random(seed))
        hits = parse_page(sh.steps[-2].observation)["hits"]
        assert sorted(hits) == sorted(parse_page(ex.steps[-2].observation)["hits"])
        assert sh.steps[-1] == ex.steps[-1] and sh.steps[-1].train
        orders.add(tuple(h[0] for h in hits))
    assert len(orders) > 1
    assert parse_page(ex.steps[-2].observation)["hits"][0][0] == page.listed[0]  # not in place
    with pytest.raises(ProbeError, match="not a pick example"):
        shuffled_hits(ex.prefix(0), random.Random(0))


def test_page_ranker_learns_what_the_page_says():
    from eef.envs.webshop.env import SEP
    from eef.trajectory import Step, Trajectory
    rng = random.Random(0)
    words = "red blue green cotton wool silk shirt dress hat coat boots socks".split()

    def page(i: int) -> PickPage:
        want = rng.sample(words, 4)
        titles = [" ".join(rng.sample([w for w in words if w not in want], 4)) for _ in range(6)]
        at = rng.randrange(6)
        titles[at] = " ".join(want)  # the target: the title holding the instruction's words
        hits = [(f"B{i:04d}{k:05d}", t.title(), "$10.00") for k, t in enumerate(titles)]
        obs = SEP.join(["Back to Search", "Page 1 (Total results: 6)", "Next >",
                        *[x for h in hits for x in h]])
        ctx = Trajectory(f"t{i}", "webshop", "i need a " + " ".join(want), "WebShop",
                         [Step("search[x]", obs, train=False)])
        return PickPage(ctx, [h[0] for h in hits], hits[at][0], Step("click[x]", ""))

    with pytest.raises(ProbeError, match="before fit"):
        PageRanker().pick(page(0))
    with pytest.raises(ProbeError, match="no pages"):
        PageRanker().fit([])
    ranker = PageRanker().fit([page(i) for i in range(60)])
    held = [page(i) for i in range(60, 100)]
    assert sum(ranker.pick(p) == p.target for p in held) >= 36
    assert sum(p.listed[0] == p.target for p in held) <= 15
    # the titles carry the pick here, the position does not
    by_words = PageRanker(groups=("words",)).fit([page(i) for i in range(60)])
    assert sum(by_words.pick(p) == p.target for p in held) >= 36
    where = PageRanker(groups=("position",)).fit([page(i) for i in range(60)])
    assert sum(where.pick(p) == p.target for p in held) <= 15
    assert where.accuracy(held) == sum(where.pick(p) == p.target for p in held) / len(held)
    assert where.accuracy([]) == 0.0
    with pytest.raises(ProbeError, match="groups"):
        PageRanker(groups=("colour",))
    with pytest.raises(ProbeError, match="groups"):
        PageRanker(groups=())


def test_lm_title_scores_match_unbatched_likelihoods():
    """Padded batches give each title the log-likelihood a lone forward pass gives it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from probes.picks import TITLE_LEAD, lm_title_scores, under_cap
    from test_models_util import cached_dir, tiny_model_dir
    path = cached_dir("preset", tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    pages = [("i need red shoes, and price lower than 30.00 dollars",
              ["red running shoes for men", "a blue lamp", "shoes"]),
             ("a wooden desk", ["oak desk with two drawers and a long title of many words"])]
    got = lm_title_scores(model, tok, pages, batch_size=3)

    def alone(prompt: str, title: str) -> tuple[float, int]:
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        c = tok(" " + title, add_special_tokens=False)["input_ids"][:48]
        with torch.inference_mode():
            lp = torch.log_softmax(model(input_ids=torch.tensor([p + c])).logits[0].float(), -1)
        return sum(float(lp[len(p) - 1 + i, t]) for i, t in enumerate(c)), len(c)

    for (ins, titles), sc in zip(pages, got):
        for j, title in enumerate(titles):
            cond, n = alone(f"Instruction: {ins}\n{TITLE_LEAD}", title)
            plain, _ = alone(TITLE_LEAD, title)
            assert sc["cond"][j] == pytest.approx(cond, abs=1e-3)
            assert sc["plain"][j] == pytest.approx(plain, abs=1e-3)
            assert sc["pmi"][j] == pytest.approx(cond - plain, abs=1e-3)
            assert sc["mean"][j] == pytest.approx(cond / n, abs=1e-4)
    assert under_cap(pages[0][0], ["$12.00", "$45.99", "$29.99"]) == [0, 2]
    assert under_cap(pages[0][0], ["$99.00", "$45.99"]) == [0, 1]     # none under: all
    assert under_cap(pages[1][0], ["$99.00", "no price"]) == [0, 1]   # no cap: all
