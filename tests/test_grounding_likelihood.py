"""Choosing among admissible actions by the model's likelihood (``rollout.ground_by:
likelihood``), repeat avoidance (``rollout.avoid_repeats``) and the scoring under them."""

from __future__ import annotations

import math
import re

import pytest
import torch

from eef.models.decode import PrefixCache, continuation_logprobs, decode
from eef.policy import Sampling
from eef.rollout.grounding import (Grounding, choices, ground_batch, repeated,
                                   template_to_fill)
from eef.trajectory import Step, Trajectory
from test_models_hf import model_dir, policy  # noqa: F401  (shared fixtures)

PAGE = ["search[<query>]", "click[back to search]", "click[< prev]", "click[b0abc12345]",
        "click[b0zzz99999]"]


def traj(*steps: tuple[str, str], first: str = "results A") -> Trajectory:
    return Trajectory("t/0", "webshop", "find", first,
                      [Step(a, o, "") for a, o in steps])


@torch.inference_mode()
def reference_logprob(model, prefix, cont) -> float:
    ids = torch.tensor([list(prefix) + list(cont)])
    lp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
    return sum(float(lp[len(prefix) - 1 + t, tok]) for t, tok in enumerate(cont))


def test_continuation_logprobs_equal_a_plain_forward(policy):
    m, tok = policy.model, policy.tokenizer
    prefix = tok.encode("click search results page red shoes size large " * 3)
    conts = [tok.encode(" buy now"), tok.encode(" next"), tok.encode(" back to search page")]
    want = [reference_logprob(m, prefix, c) for c in conts]
    for fast in (True, False):
        got = continuation_logprobs(m, prefix, conts, fast=fast)
        assert got == pytest.approx(want, abs=1e-3)
    # the prefix from a prefix cache: same numbers, only the rest computed
    cache = PrefixCache(min_tokens=4)
    decode(m, [prefix], max_new_tokens=3, prefix_cache=cache, fast=True)
    assert cache.lookup(prefix)[0] == len(prefix) - 1
    assert continuation_logprobs(m, prefix, conts, fast=True, prefix_cache=cache) == \
        pytest.approx(want, abs=1e-3)
    with pytest.raises(ValueError, match="empty"):
        continuation_logprobs(m, prefix, [[]])


def test_rank_actions_scores_the_whole_turn_up_to_a_constant(policy):
    ctx = traj(("search[red shoes]", "Page 1 [SEP] B0ABC12345 [SEP] Red shoe [SEP] $3"))
    cands = ["click[B0ABC12345]", "click[< prev]", "click[back to search]"]
    s = Sampling(max_new_tokens=16)
    got = policy.rank_actions([ctx], ["I pick the red shoe"], [cands], s)[0]
    assert len(got) == 3 and all(math.isfinite(x) and x < 0 for x in got)
    # the full turn's log-probability, computed directly: the same differences
    from eef.models.format import trajectory_messages
    from eef.react import render_turn
    chat = trajectory_messages(ctx)
    prompt = policy.format.encode_messages(chat, policy.max_context - 16)
    full = []
    for a in cands:
        seg = policy.format.segments(chat + [{"role": "assistant", "content":
                                              render_turn("I pick the red shoe", a)}], [1])[-1]
        full.append(reference_logprob(policy.model, prompt,
                                      [i for i, k in zip(seg.ids, seg.mask) if k]))
    assert [g - got[0] for g in got] == pytest.approx([f - full[0] for f in full], abs=1e-3)
    assert policy.rank_actions([ctx], ["x"], [[]]) == [[]]


def test_turn_tokens_are_the_trained_tokens_and_a_head_without_the_end(policy):
    from eef.models.format import trajectory_messages
    chat = trajectory_messages(traj(("search[red shoes]", "Page 1 [SEP] B0ABC12345")))
    turn = "Thought: I pick it\nAction: click[B0ABC12345]"
    seg = policy.format.segments(chat + [{"role": "assistant", "content": turn}], [1])[-1]
    full = policy.turn_tokens(chat, turn)
    assert full == [i for i, k in zip(seg.ids, seg.mask) if k]
    head = policy.turn_tokens(chat, turn, end_of_turn=False)
    stops = set(policy.format.stop_token_ids)
    assert full[:len(head)] == head and head[-1] not in stops
    assert full[len(head):] and set(full[len(head):]) <= stops
    assert policy.tokenizer.decode(head).strip().lower().endswith("click[b0abc12345]")


def test_continue_turns_fills_the_forced_prefix(policy):
    ctx = traj()
    s = Sampling(max_new_tokens=8)
    got = policy.continue_turns([ctx, ctx], ["Thought: x\nAction: search[", "Action: click["], s)
    assert got[0].startswith("Thought: x\nAction: search[") and got[1].startswith("Action: click[")
    assert all("\n" not in g.split("Action: ")[1] for g in got)
    assert template_to_fill("click[x]", ["search[<query>]"]) == "search"
    assert template_to_fill("search[x]", ["search[<query>]"]) is None
    assert template_to_fill("click[x]", PAGE) is None


def test_repeats_and_choices():
    t = traj(("click[b0abc12345]", "item A"), ("click[< prev]", "results A"))
    assert repeated(t, "click[B0ABC12345] ") and not repeated(t, "click[b0zzz99999]")
    assert not repeated(t, "click[< prev]")  # taken from "item A", not from "results A"
    assert choices(t, "click[b0abc12345]", PAGE) is None  # admissible, repeats allowed
    assert choices(t, "click[b0abc12345]", PAGE, avoid_repeats=True) == \
        ["click[back to search]", "click[< prev]", "click[b0zzz99999]"]
    assert choices(t, "search[red]", PAGE) is None  # fills the template
    assert choices(t, "click[nope]", PAGE) == PAGE[1:]
    assert choices(t, "click[nope]", []) is None
    assert choices(t, "search[x]", ["search[<query>]"]) is None


class _Ranker:
    spec = "ranker"

    def __init__(self, best: str):
        self.best, self.calls = best, []

    def rank_actions(self, contexts, thoughts, candidates, sampling=None):
        self.calls.append((len(contexts), thoughts, candidates, sampling))
        return [[1.0 if c == self.best else 0.0 for c in cands] for cands in candidates]


def test_ground_batch_rules():
    t0, t1 = traj(), traj(("click[b0abc12345]", "item A"), ("click[< prev]", "results A"))
    acts = ["click[b0abc1234x]", "click[b0abc12345]"]
    # fuzzy, no repeat rule: the first maps to the nearest id, the second is kept
    assert ground_batch(None, [t0, t1], ["", ""], acts, [PAGE, PAGE]) == \
        ["click[b0abc12345]", "click[b0abc12345]"]
    r = _Ranker("click[< prev]")
    s = Sampling(max_new_tokens=8)
    got = ground_batch(r, [t0, t1], ["a", "b"], acts, [PAGE, PAGE],
                       Grounding("likelihood", avoid_repeats=True), s)
    assert got == ["click[< prev]", "click[< prev]"]
    # t1's action repeats: its alternatives are ranked without its thought
    assert r.calls == [(2, ["a", ""], [PAGE[1:], [PAGE[1], PAGE[2], PAGE[4]]], s)]
    # a state listing only a template: the turn is continued from "Action: search["
    class Filler(_Ranker):
        def continue_turns(self, contexts, partials, sampling=None, seeds=None):
            self.calls.append(("continue", partials, seeds))
            return [p + "red shoes]" for p in partials]
    f = Filler("")
    search_page = ["search[<query>]"]
    got = ground_batch(f, [t0, t1], ["go", ""], ["click[< prev]", "search[x]"],
                       [search_page, search_page], Grounding("likelihood"), seeds=[5, 6])
    assert got == ["search[red shoes]", "search[x]"]
    assert f.calls == [("continue", ["Thought: go\nAction: search["], [5])]
    # fill_without_thought: the thought that argued for the click is left out
    got = ground_batch(f, [t0], ["#1 looks closest"], ["click[#1]"], [search_page],
                       Grounding("likelihood", fill_without_thought=True), seeds=[7])
    assert got == ["search[red shoes]"]
    assert f.calls[-1] == ("continue", ["Action: search["], [7])
    assert ground_batch(f, [t0], [""], ["click[< prev]"], [search_page]) == ["click[< prev]"]
    # a policy that cannot rank falls back to fuzzy
    assert ground_batch(object(), [t0], [""], acts[:1], [PAGE], Grounding("likelihood")) == \
        ["click[b0abc12345]"]
    with pytest.raises(ValueError, match="grounding rule"):
        Grounding("nearest")
    lik = Grounding("likelihood")
    assert Grounding.of(lik) is lik and Grounding.of(True) == Grounding()
    assert Grounding.of(False) is None


@pytest.mark.needs_data
def test_engine_grounds_by_likelihood_and_breaks_loops():
    """A looping policy on WebShop: inspect the first hit, go back, inspect it again...  With
    avoid_repeats the engine's second visit of the results page takes another action, the
    ranker's choice; the trajectory keeps what was executed, meta the model's text."""
    from eef.envs import make
    from eef.rollout.engine import EngineConfig, RolloutRequest, rollout
    from eef.rollout.episode import run_episode

    class Looper(_Ranker):
        def act(self, contexts, sampling=None, seeds=None):
            out = []
            for c in contexts:
                obs = c.observation
                if not c.steps:
                    out.append("Action: search[shoes]")
                elif "< Prev" in obs:
                    out.append("Action: click[< prev]")
                else:
                    ids = re.findall(r"\[SEP\] ([A-Z0-9]{10}) \[SEP\]", obs)
                    out.append(f"Action: click[{ids[0]}]" if ids else "Action: click[< prev]")
            return out

    env = make("webshop", max_steps=6)
    tid = env.tasks("test")[0].id
    pol = Looper("click[next >]")
    plain = run_episode(env, pol, tid)
    assert plain.actions[1] == plain.actions[3] and "grounded" not in plain.meta
    cfg = EngineConfig(num_envs=2, progress=False, ground_actions=True, ground_by="likelihood",
                       avoid_repeats=True)
    res = rollout(env.name, pol, [RolloutRequest(tid, samples=2)], config=cfg)
    seq = run_episode(env, pol, tid, ground=Grounding("likelihood", avoid_repeats=True))
    for t in res.trajectories + [seq]:
        assert t.actions[:4] == plain.actions[:3] + ["click[next >]"]
        assert t.meta["grounded"][0] == [3, plain.actions[3]]
    env.close()


def test_eval_cli_grounding_options():
    from typer.testing import CliRunner

    from eef.cli import app
    r = CliRunner().invoke(app, ["eval", "webshop", "--policy", "expert:oracle",
                                 "--ground-by", "likelihood"])
    assert r.exit_code != 0 and "apply with --ground" in r.output
    r = CliRunner().invoke(app, ["eval", "webshop", "--policy", "expert:oracle",
                                 "--fill-without-thought"])
    assert r.exit_code != 0 and "apply with --ground" in r.output
    r = CliRunner().invoke(app, ["eval", "webshop", "--policy", "expert:oracle", "--ground",
                                 "--fill-without-thought"])
    assert r.exit_code != 0 and "--fill-without-thought needs --ground-by: likelihood" in r.output
    r = CliRunner().invoke(app, ["eval", "webshop", "--policy", "expert:oracle", "--ground",
                                 "--ground-by", "nearest"])
    assert r.exit_code != 0 and "'nearest' is not one of fuzzy, likelihood" in r.output


def test_ban_repeats_within_a_line():
    from eef.models.decode import _ban_repeats
    lg = torch.zeros(3, 10)
    outs = [[1, 2, 3, 1, 2],      # 1 2 -> 3 seen: 3 banned (n=3)
            [1, 2, 3, 9, 1, 2],   # 9 is a line break: the line is [1, 2], nothing banned
            [4, 4]]               # 4 4 -> nothing seen after "4 4" yet
    got = _ban_repeats(lg, outs, 3, {9})
    assert torch.isinf(got[0, 3]) and int(torch.isinf(got).sum()) == 1
    assert _ban_repeats(lg, [[1]], 3, set()) is lg


def test_no_repeat_ngram_decoding(policy):
    """Greedy decoding of a model that loops: with the ban no 3-gram repeats within a line,
    and a ban that never triggers changes nothing."""
    tok = policy.tokenizer
    prompt = tok.encode("red shoes red shoes red shoes red shoes red shoes red")
    plain = decode(policy.model, [prompt], max_new_tokens=24)[0]
    assert len(set(plain)) == 1  # the untrained test model repeats one token
    banned = decode(policy.model, [prompt], max_new_tokens=24, no_repeat_ngram=3,
                    line_ids=set())[0]
    grams = [tuple(banned[i:i + 3]) for i in range(len(banned) - 2)]
    assert len(grams) == len(set(grams))
    huge = decode(policy.model, [prompt], max_new_tokens=24, no_repeat_ngram=25,
                  line_ids=set())[0]
    assert huge == plain
    s = Sampling(max_new_tokens=24, no_repeat_ngram=3)
    ctx = traj()
    assert policy.act([ctx], s)[0] == policy.act([ctx], s)[0]  # through the policy


def test_no_repeat_ngram_config_checks():
    from eef.algorithms.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="no_repeat_ngram must be 0"):
        load_config(None, ["sampling.no_repeat_ngram=1"])
    assert load_config(None, ["sampling.no_repeat_ngram=4"]).sampling.no_repeat_ngram == 4


def test_grounding_config_checks_and_rollout_key(tmp_path):
    """fill_without_thought needs likelihood grounding; it enters a rollout stage's key only
    when on (runs without it keep their keys)."""
    from eef.algorithms.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="needs rollout.ground_by: likelihood"):
        load_config(None, ["rollout.ground_by=fuzzy", "rollout.fill_without_thought=true"])
    with pytest.raises(ConfigError, match="apply with rollout.ground_actions"):
        load_config(None, ["rollout.ground_actions=false", "rollout.avoid_repeats=true"])
    cfg = load_config(None, ["rollout.fill_without_thought=true"])
    assert cfg.rollout.grounding() == Grounding("likelihood", False, True)
    from eef.algorithms.stages import grounding_key
    from eef.rollout.engine import EngineConfig
    assert grounding_key(EngineConfig()) == {}
    assert grounding_key(EngineConfig(ground_actions=True)) == {"ground_actions": True}
    lik = {"ground_actions": True, "ground_by": "likelihood", "avoid_repeats": False}
    assert grounding_key(EngineConfig(ground_actions=True, ground_by="likelihood")) == lik
    assert grounding_key(cfg.rollout) == {**lik, "fill_without_thought": True}
