"""The chat format of agent trajectories, with per-token loss masks (Eq. 1 of the paper).

Conversation (one documented format for every backend):

* ``system`` (optional): a fixed system text (``ChatFormat.system``).
* ``user``: the task prompt: the first observation, preceded by ``Task: <instruction>`` when
  the instruction is not already part of it (WebShop's first page contains it; other envs may
  not).
* then, per step, ``assistant``: ``Thought: ...\\nAction: ...`` (``eef.react.render_turn``) and
  ``user``: ``Observation: <observation>`` (the ShareGPT convention of ``eef.trajectory``).

The conversation is rendered through the tokenizer's chat template (or ``DEFAULT_CHAT_TEMPLATE``
when it has none) and tokenised **once** (a fast tokenizer, with character offsets).  Each
token is attributed to the message segment its first character falls into; a segment is the text
a message adds to the rendering (``render(messages[:k+1]) - render(messages[:k])``), where the
rendering before an assistant message ends with the template's generation prompt, so the
assistant header belongs to the preceding (never trained) segment.

Loss mask (Eq. 1: the loss counts action tokens only): a token is trained iff it is attributed
to the segment of an assistant turn whose step has ``train=True`` and overlaps the turn's text,
from its first character to the end-of-turn marker inclusive (so the model learns to stop);
whitespace the template puts after the marker is not trained.  No prompt, observation or header
token is ever trained.

Context budget (truncation policy): a training example is the task prompt plus a window of
consecutive steps ending with a trained turn.  Windows are chosen from the last trained turn
backwards, each as long as fits the budget; every trained turn falls into exactly one window, so
a long trajectory becomes several examples and no trained turn is dropped.  Only when the task
prompt alone does not fit is its middle cut (its first tokens and its last ``KEEP_TAIL`` tokens
are kept), and a turn longer than the whole budget is dropped with a warning; both are counted in
``CutReport``.  At inference the prompt keeps the task and the most recent steps that fit
(``encode_prompt``).

Cut note (``ChatFormat.cut_note``, off unless set): a window that leaves out earlier steps
looks like the episode's start (the task prompt, then a later turn) unless something says so;
with a cut note, the task prompt of every such window, in training and at inference alike,
ends with the note (``DEFAULT_CUT_NOTE``), so the first turn after the bare task prompt is
always an episode's real first turn.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from eef.trajectory import Trajectory

log = logging.getLogger(__name__)

#: tokens kept at the end of a task prompt that has to be cut (they hold the assistant header)
KEEP_TAIL = 16

#: The chat template of the tiny/small presets, also used for tokenizers without a template.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown chat role: ' + m['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


class FormatError(ValueError):
    """A conversation cannot be rendered or tokenised as documented."""


class ChatTemplateError(FormatError):
    """The chat template is unusable (not prefix-stable, unknown role, ...)."""


class EmptyMaskError(FormatError):
    """A dataset has no trained token at all (every step ``train=False`` or no steps)."""


# -- conversation ------------------------------------------------------------------------------
def task_prompt(traj: "Trajectory") -> str:
    """The first user message: the first observation, with the instruction prepended as
    ``Task: ...`` unless the observation already contains it (case-insensitive)."""
    obs, ins = traj.initial_observation or "", (traj.instruction or "").strip()
    if ins and ins.lower() not in obs.lower():
        return f"Task: {ins}\n{obs}" if obs else f"Task: {ins}"
    return obs


def observation_message(observation: str) -> str:
    return f"Observation: {observation}"


def trajectory_messages(traj: "Trajectory", system: str | None = None,
                        last_observation: bool = True) -> list[dict[str, str]]:
    """The conversation of a (partial) trajectory as chat messages.  ``last_observation=False``
    leaves out the observation after the last step (nothing is learnt from it)."""
    msgs: list[dict[str, str]] = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": task_prompt(traj)})
    for i, s in enumerate(traj.steps):
        msgs.append({"role": "assistant", "content": s.turn})
        if last_observation or i < len(traj.steps) - 1:
            msgs.append({"role": "user", "content": observation_message(s.observation)})
    return msgs


_ACTION_LINE = re.compile(r"(?:^|\s)action\s*:[ \t]*\S[^\n]*\n", re.IGNORECASE)


def cut_after_action(text: str) -> tuple[str, bool]:
    """``text`` up to the end of its first complete, non-empty ``Action:`` line, and whether
    such a line was found (a turn is over once its action line is; see ``eef.react``)."""
    m = _ACTION_LINE.search(text)
    return (text[:m.end() - 1], True) if m else (text, False)


# -- identifier aliases ------------------------------------------------------------------------
#: model directories keep their format options here (read by ``format_options``)
FORMAT_FILE = "eef_format.json"
#: what ends the task prompt of a window that leaves out earlier steps (``ChatFormat.cut_note``)
DEFAULT_CUT_NOTE = "(Earlier steps of this episode are not shown.)"
#: what precedes a trained turn's *decision token*: the token holding the first character after
#: a leading ``Thought:`` (the thought's first word: what kind of turn it is) or ``Action:`` (a
#: turn without a thought: the action's first token), else the turn's first token
#: (``train.decision_weight``; ``eef.models.decisions`` measures the same token)
DECISION = re.compile(r"(?:(?:thought|action)\s*:[ \t]*)?", re.IGNORECASE)


@dataclass(frozen=True)
class IdAliases:
    """Per-page aliases of opaque identifiers (WebShop's ASINs): the model reads and writes
    ``#1``, ``#2``, ... for the identifiers of the latest observation, in their order on the
    page, instead of the identifiers themselves.

    Entity anonymisation as in reading-comprehension data sets (Hermann et al., 2015): an agent
    trained on a few thousand pages memorises the identifiers of its training products instead
    of reading the page (measured: docs/tiny-preset.md), and an identifier that is never a
    training target gets no usable output embedding.  With aliases every product page uses
    the same few well-trained tokens, so "click the first hit" is one pattern for every page,
    seen or not.  The mapping is invertible within a conversation: ``encode`` rewrites every
    message with the table of the latest observation that lists identifiers (an assistant
    turn refers to the page it was shown, or, on a page without identifiers such as a
    product's own page, to the list it came from: "#2 has no size L" on #2's page; the task
    prompt counts as the first observation), ``decode`` maps the aliases of a model's
    response back with the same table; an alias that is not in it is left as written (the env
    then rejects the action).  Trajectories, datasets and the env only ever hold real
    identifiers.
    """

    #: what an identifier looks like in an observation: by default a WebShop ASIN as a field
    #: of a results page (``[SEP] B07B6DVG41 [SEP]``)
    pattern: str = r"(?<=\[SEP\] )(?=[A-Z0-9]*[0-9])[A-Z0-9]{10}(?= \[SEP\])"
    #: the alias of the n-th identifier (``{n}`` counts from 1)
    alias: str = "#{n}"

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise FormatError(f"id_aliases.pattern {self.pattern!r}: {e}") from None
        try:
            self.alias.format(n=1)
        except (KeyError, IndexError, ValueError):
            raise FormatError(f"id_aliases.alias {self.alias!r}: only {{n}} may be in braces"
                              ) from None
        if "{n}" not in self.alias or not self.alias.replace("{n}", ""):
            raise FormatError(f"id_aliases.alias {self.alias!r} must hold {{n}} and some text")
        if re.compile(self.pattern).groups:
            raise FormatError(f"id_aliases.pattern {self.pattern!r}: use (?:...) groups only")

    def table(self, text: str) -> list[str]:
        """The identifiers of one observation, each once, in order of appearance."""
        return list(dict.fromkeys(re.findall(self.pattern, text)))

    def _rewrite(self, text: str, table: list[str]) -> str:
        if not table:
            return text
        index = {x: self.alias.format(n=i + 1) for i, x in enumerate(table)}
        rx = r"(?<!\w)(?:" + "|".join(map(re.escape, table)) + r")(?!\w)"
        return re.sub(rx, lambda m: index[m.group(0)], text)

    def encode(self, messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        out, table = [], []
        for m in messages:
            if m.get("role") == "user":
                table = self.table(m.get("content", "")) or table
            out.append({**m, "content": self._rewrite(m.get("content", ""), table)})
        return out

    def decode(self, text: str, messages: Sequence[dict[str, str]]) -> str:
        table = next((t for m in reversed(messages) if m.get("role") == "user"
                      for t in [self.table(m.get("content", ""))] if t), [])
        if not table:
            return text
        head, _, tail = self.alias.partition("{n}")
        rx = re.escape(head) + r"(\d+)" + re.escape(tail) + (r"\b" if not tail else "")
        return re.sub(rx, lambda m: table[int(m.group(1)) - 1]
                      if 1 <= int(m.group(1)) <= len(table) else m.group(0), text)


def check_cut_note(note: Any) -> str:
    """``note`` if it is a usable cut note (a non-empty text), else ``FormatError``."""
    if not isinstance(note, str) or not note.strip():
        raise FormatError(f"cut_note must be a non-empty text, not {note!r}")
    return note


def format_options(model_dir: str | os.PathLike | None) -> dict[str, Any]:
    """``ChatFormat`` keywords stored with a model (``FORMAT_FILE``; {} when there is none)."""
    path = Path(model_dir).expanduser() / FORMAT_FILE if model_dir is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or set(raw) - {"id_aliases", "cut_note"}:
            raise ValueError(f"unknown keys {sorted(set(raw) - {'id_aliases', 'cut_note'})}"
                             if isinstance(raw, dict) else "not a JSON object")
        ali, note = raw.get("id_aliases"), raw.get("cut_note")
        out: dict[str, Any] = {"aliases": IdAliases(**ali) if ali is not None else None}
        if note is not None:
            out["cut_note"] = check_cut_note(note)
        return out
    except (ValueError, TypeError) as e:
        raise FormatError(f"{path}: {e}") from None


def save_format_options(model_dir: str | os.PathLike, aliases: IdAliases | None,
                        cut_note: str | None = None) -> None:
    """Store ``aliases`` and ``cut_note`` with a model so that every later load applies them
    (neither set: no file)."""
    path = Path(model_dir) / FORMAT_FILE
    raw: dict[str, Any] = {}
    if aliases is not None:
        raw["id_aliases"] = asdict(aliases)
    if cut_note is not None:
        raw["cut_note"] = cut_note
    if not raw:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps(raw, indent=1) + "\n")


# -- segments ----------------------------------------------------------------------------------
@dataclass
class Segment:
    """The tokens one message adds.  ``mask[t]`` is 1 for trained tokens, ``decision[t]`` for
    the trained turn's decision token (``DECISION``)."""

    ids: list[int]
    mask: list[int]
    role: str
    step: int  # step index for assistant turns and their observations, -1 for the task prompt
    decision: list[int] = field(default_factory=list)


@dataclass
class Example:
    """One training sequence."""

    input_ids: list[int]
    mask: list[int]
    steps: list[int]  # the trained steps whose tokens are in the loss
    source: str = ""  # task id of the trajectory
    decision: list[int] = field(default_factory=list)  # 1: a trained turn's decision token

    @property
    def n_trained(self) -> int:
        return sum(self.mask)


@dataclass
class CutReport:
    """What the context budget cut, summed over a dataset."""

    trajectories: int = 0
    examples: int = 0
    trained_turns: int = 0
    windowed_trajectories: int = 0  # trajectories split into several examples
    context_steps_cut: int = 0  # earlier steps left out of an example's context
    prompt_tokens_cut: int = 0
    dropped_trained_turns: int = 0  # turns longer than the whole budget (warned)
    skipped_untrained: int = 0  # trajectories without any trained step
    noted_windows: int = 0  # examples whose task prompt ends with the cut note

    def add(self, other: "CutReport") -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


class ChatFormat:
    """Renders conversations through a tokenizer's chat template and tokenises them once.

    ``tokenizer`` must be a fast (``tokenizers``-backed) HF tokenizer; ``system`` is an optional
    system message; ``chat_template`` overrides the tokenizer's own template (default: the
    tokenizer's, else ``DEFAULT_CHAT_TEMPLATE``); ``aliases`` rewrites identifiers into
    per-page aliases before tokenising (``IdAliases``); ``cut_note`` ends the task prompt of
    every window that leaves out earlier steps, in training examples and prompts alike (the
    module's "Cut note").
    """

    def __init__(self, tokenizer: Any, system: str | None = None,
                 chat_template: str | None = None, aliases: IdAliases | None = None,
                 cut_note: str | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise FormatError(f"{type(tokenizer).__name__} is not a fast tokenizer: eef needs "
                              "character offsets (use a tokenizers-backed tokenizer)")
        self.tokenizer = tokenizer
        self.system = system
        self.aliases = aliases
        self.cut_note = check_cut_note(cut_note) if cut_note is not None else None
        self.template = chat_template or getattr(tokenizer, "chat_template", None) \
            or DEFAULT_CHAT_TEMPLATE
        if isinstance(self.template, dict):  # several named templates: use the default one
            self.template = self.template.get("default") or next(iter(self.template.values()))
        self.end_of_turn = self._find_end_of_turn()
        self.stop_token_ids = self._stop_ids()

    # -- rendering -----------------------------------------------------------------------------
    def render(self, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
        if not messages:
            return ""
        try:
            out = self.tokenizer.apply_chat_template(
                list(messages), chat_template=self.template, tokenize=False,
                add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja errors, raise_exception(...) of the template
            raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from e
        if not isinstance(out, str):
            raise ChatTemplateError(f"chat template returned {type(out).__name__}, not text")
        return out

    def _find_end_of_turn(self) -> str:
        sentinel = "\x00EEF\x00"
        msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": sentinel}]
        text = self.render(msgs, False)
        if sentinel not in text:
            raise ChatTemplateError("the chat template drops assistant message content")
        return text.split(sentinel, 1)[1].strip()

    def _stop_ids(self) -> list[int]:
        ids = set()
        tok = self.tokenizer
        if tok.eos_token_id is not None:
            ids.add(int(tok.eos_token_id))
        if self.end_of_turn:
            enc = tok(self.end_of_turn, add_special_tokens=False)["input_ids"]
            if len(enc) == 1:
                ids.add(int(enc[0]))
        return sorted(ids)

    def _boundaries(self, messages: Sequence[dict[str, str]], generation_prompt: bool
                    ) -> tuple[str, list[int]]:
        """The full text and the character offset where each message's segment starts."""
        if len(messages) > self.PROBE:
            fast = self._boundaries_linear(messages, generation_prompt)
            if fast is not None:
                return fast
        return self._boundaries_exact(messages, generation_prompt)

    #: conversations longer than this use the linear-time boundary search
    PROBE = 8

    def _boundaries_linear(self, messages: Sequence[dict[str, str]], generation_prompt: bool
                           ) -> tuple[str, list[int]] | None:
        """Same result as ``_boundaries_exact`` in two renderings instead of one per message.

        The conversation is rendered once with a unique placeholder per content, which splits
        the text into the template's "glue" strings between contents.  Where a segment
        boundary falls inside a glue string is learnt from the exact method on the first
        ``PROBE`` messages and reused for identical glue strings later on.  Returns None (the
        caller falls back to the exact method) if the real rendering is not the placeholder
        rendering with the contents substituted, or a glue string was not seen in the probe.
        """
        n = len(messages)
        gen_last = generation_prompt and messages[-1]["role"] != "assistant"
        marks = [f"\x00{k}\x00" for k in range(n)]
        probe = [{"role": m["role"], "content": t} for m, t in zip(messages, marks)]
        stext = self.render(probe, gen_last)
        glue, pos = [], 0
        for t in marks:
            i = stext.find(t, pos)
            if i < 0:
                return None
            glue.append(stext[pos:i])
            pos = i + len(t)
        glue.append(stext[pos:])
        full = "".join(g + m["content"] for g, m in zip(glue, messages)) + glue[-1]
        if full != self.render(messages, gen_last):
            return None
        m = self.PROBE
        _, exact = self._boundaries_exact(probe[:m], False)
        # offsets of glue k (between content k-1 and content k) in the placeholder text
        gstart, p = [], 0
        for g, t in zip(glue, marks):
            gstart.append(p)
            p += len(g) + len(t)
        split: dict[tuple[str, bool], int] = {}
        for k in range(1, m):
            gen = messages[k]["role"] == "assistant"
            split[(glue[k], gen)] = exact[k] - gstart[k]
        starts, p = [0], len(glue[0])
        for k in range(1, n):
            p += len(messages[k - 1]["content"])
            off = split.get((glue[k], messages[k]["role"] == "assistant"))
            if off is None or not 0 <= off <= len(glue[k]):
                return None  # unseen glue, or a boundary outside it (e.g. a merged system)
            starts.append(p + off)
            p += len(glue[k])
        return full, starts

    def _boundaries_exact(self, messages: Sequence[dict[str, str]], generation_prompt: bool
                          ) -> tuple[str, list[int]]:
        n = len(messages)
        starts, prev = [], ""
        for k in range(n + 1):
            nxt_is_assistant = k < n and messages[k]["role"] == "assistant"
            gen = nxt_is_assistant or (k == n and generation_prompt
                                       and messages[-1]["role"] != "assistant")
            text = self.render(messages[:k], gen)
            if not text.startswith(prev):
                raise ChatTemplateError(
                    "the chat template is not prefix-stable: rendering the first "
                    f"{k} messages does not extend the rendering of the first {k - 1}")
            if k > 0:
                starts.append(len(prev))
            prev = text
        return prev, starts

    def segments(self, messages: Sequence[dict[str, str]], train_steps: Iterable[int] = (),
                 generation_prompt: bool = False) -> list[Segment]:
        """Tokenise ``messages`` once and split the tokens into per-message segments.

        Assistant messages are numbered 0, 1, ... (their step index); the turns whose step is in
        ``train_steps`` are trained.  The user message after assistant ``i`` has ``step=i``.
        """
        if not messages:
            raise FormatError("empty conversation")
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) \
                    or m.get("role") not in ("system", "user", "assistant"):
                raise FormatError(f"bad chat message {m!r}: need role system/user/assistant "
                                  "and text content")
        if self.aliases is not None:
            messages = self.aliases.encode(messages)
        train = set(train_steps)
        text, starts = self._boundaries(messages, generation_prompt)
        ends = starts[1:] + [len(text)]
        # the trained span of each assistant message: its text up to the end-of-turn marker;
        # and the character its decision token holds (-1: none)
        spans: list[tuple[int, int]] = []
        chars: list[int] = []
        roles, steps, step = [], [], -1
        for m, a, b in zip(messages, starts, ends):
            if m["role"] == "assistant":
                step += 1
            roles.append(m["role"])
            steps.append(step)
            seg = text[a:b]
            lead = len(seg) - len(seg.lstrip())
            trained = m["role"] == "assistant" and step in train
            spans.append((a + lead, a + len(seg.rstrip())) if trained else (0, 0))
            chars.append(a + DECISION.match(seg, lead).end() if trained else -1)
        ids, offsets = self._encode(text)
        ids_a = np.asarray(ids, dtype=np.int64)
        off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
        # segment of each token: the last segment starting at or before its first character
        seg = np.searchsorted(np.asarray(starts), off[:, 0], side="right") - 1
        span = np.asarray(spans, dtype=np.int64).reshape(-1, 2)[seg]
        mask = (off[:, 0] < span[:, 1]) & (off[:, 1] > span[:, 0])  # overlaps the turn's text
        ch = np.asarray(chars, dtype=np.int64)[seg]
        decision = mask & (ch >= 0) & (off[:, 0] <= ch) & (off[:, 1] > ch)
        cuts = np.searchsorted(seg, np.arange(len(messages) + 1), side="left")
        return [Segment(ids_a[a:b].tolist(), mask[a:b].astype(np.int64).tolist(), r, st,
                        decision[a:b].astype(np.int64).tolist())
                for r, st, a, b in zip(roles, steps, cuts[:-1], cuts[1:])]

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets of ``text`` (no special tokens added)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the Rust tokenizer directly: much faster than the wrapper
            enc = backend.encode(text, add_special_tokens=False)
            return enc.ids, enc.offsets
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             verbose=False)
        return enc["input_ids"], enc["offset_mapping"]

    # -- training examples ---------------------------------------------------------------------
    def encode_training(self, traj: "Trajectory", max_tokens: int) -> tuple[list[Example], CutReport]:
        """Training examples of one trajectory under a context budget of ``max_tokens``."""
        rep = CutReport(trajectories=1)
        trained = [i for i, s in enumerate(traj.steps) if s.train]
        if not trained:
            rep.skipped_untrained = 1
            return [], rep
        msgs = trajectory_messages(traj, self.system, last_observation=False)
        segs = self.segments(msgs, trained)
        plain = [t for s in segs if s.step < 0 for t in s.ids]
        noted: list[int] | None = None  # the task prompt with the cut note, once needed
        agent = {s.step: s for s in segs if s.role == "assistant"}
        env = {s.step: s for s in segs if s.role == "user" and s.step >= 0}
        n = len(traj.steps)
        pair = [len(agent[i].ids) + len(env[i].ids) if i in env else len(agent[i].ids)
                for i in range(n)]
        trained = [i for i in trained if sum(agent[i].mask) > 0]
        rep.trained_turns = len(trained)
        examples: list[Example] = []
        todo = sorted(trained)

        def first_step(j: int, head_len: int) -> int:
            """smallest k such that head + steps k..j-1 (turn + observation) + turn j fits"""
            k, used = j, head_len + len(agent[j].ids)
            while k > 0 and used + pair[k - 1] <= max_tokens:
                k -= 1
                used += pair[k]
            return k

        while todo:
            j = todo[-1]
            head = plain
            k = first_step(j, len(plain))
            if k > 0 and self.cut_note is not None:  # a later window: its head says so
                if noted is None:
                    noted = self._noted_head(msgs)
                head = noted
                k = first_step(j, len(noted))  # the longer head may leave out one more step
            covered = [i for i in todo if k <= i <= j]
            todo = [i for i in todo if i < k]
            ids, mask, dec = list(head), [0] * len(head), [0] * len(head)
            for i in range(k, j + 1):
                a = agent[i]
                ids += a.ids
                mask += a.mask if i in covered else [0] * len(a.ids)
                dec += a.decision if i in covered else [0] * len(a.ids)
                if i < j:
                    ids += env[i].ids
                    mask += [0] * len(env[i].ids)
                    dec += [0] * len(env[i].ids)
            rep.context_steps_cut += k
            rep.noted_windows += int(head is not plain)
            if len(ids) > max_tokens:  # k == j: the prompt (or the turn) alone is too long
                room = max_tokens - len(agent[j].ids)
                if room < KEEP_TAIL + 1:
                    log.warning("trajectory %s: step %d's turn (%d tokens) does not fit the "
                                "context budget of %d tokens: dropped", traj.task_id, j,
                                len(agent[j].ids), max_tokens)
                    rep.dropped_trained_turns += 1
                    continue
                cut = len(head) - room
                keep = head[: room - KEEP_TAIL] + head[len(head) - KEEP_TAIL:]
                ids, mask = keep + ids[len(head):], [0] * len(keep) + mask[len(head):]
                dec = [0] * len(keep) + dec[len(head):]
                rep.prompt_tokens_cut += cut
            examples.append(Example(ids, mask, covered, traj.task_id, dec))
        examples.reverse()
        rep.examples = len(examples)
        rep.windowed_trajectories = int(len(examples) > 1)
        return examples, rep

    # -- inference prompts ---------------------------------------------------------------------
    def encode_messages(self, messages: Sequence[dict[str, str]], max_tokens: int,
                        trim_block: int = 1) -> list[int]:
        """Prompt tokens (ending with the generation prompt) of a chat within ``max_tokens``:
        the messages before the first assistant message are always kept; then the most recent
        (assistant, user) exchanges that fit.  If even the last exchange does not fit, the middle
        of the prompt is cut (its first half and its last half of the budget are kept).

        ``trim_block`` > 1 drops the oldest exchanges in blocks: the number dropped is rounded
        up to a multiple of it, so the kept window starts at the same exchange for several
        turns in a row and a prefix cache (``eef.models.decode.PrefixCache``) can reuse it;
        with 1, every turn past the budget drops one more exchange and shifts the window."""
        if max_tokens < 2:
            raise FormatError(f"context budget of {max_tokens} tokens is too small")
        segs = self.segments(messages, (), generation_prompt=True)
        first_a = next((i for i, s in enumerate(segs) if s.role == "assistant"), len(segs))
        head = [t for s in segs[:first_a] for t in s.ids]
        rest = segs[first_a:]
        # group into exchanges: each starts at an assistant message
        groups: list[list[int]] = []
        for s in rest:
            if s.role == "assistant" or not groups:
                groups.append([])
            groups[-1].extend(s.ids)

        def fit(head_len: int) -> int:
            """how many of the latest exchanges fit after a head of ``head_len`` (at least 1)"""
            n_kept, used = 0, head_len
            for g in reversed(groups):
                if used + len(g) > max_tokens and n_kept:
                    break
                used += len(g)
                n_kept += 1
            return n_kept

        n_kept = fit(len(head))
        if n_kept < len(groups) and self.cut_note is not None:  # steps left out: say so
            head = self._noted_head(messages)
            n_kept = fit(len(head))
        dropped = len(groups) - n_kept
        if trim_block > 1 and dropped and n_kept > 1:
            dropped += min(n_kept - 1, -dropped % trim_block)  # never drop the last exchange
        ids = head + [t for g in groups[dropped:] for t in g]
        if len(ids) > max_tokens:
            half = max_tokens // 2
            ids = ids[:half] + ids[len(ids) - (max_tokens - half):]
        return ids

    def _noted_head(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The tokens of the messages before the first assistant message, the last user
        message among them ending with ``cut_note`` (the head of a window without its earlier
        steps), including the assistant header that follows."""
        first_a = next((i for i, m in enumerate(messages) if m["role"] == "assistant"),
                       len(messages))
        head = [dict(m) for m in messages[:first_a]]
        users = [i for i, m in enumerate(head) if m["role"] == "user"]
        if not users:
            raise FormatError("cut_note: no user message before the first assistant turn")
        head[users[-1]]["content"] = f"{head[users[-1]]['content']}\n\n{self.cut_note}"
        segs = self.segments(head + list(messages[first_a:first_a + 1]), (),
                             generation_prompt=first_a == len(messages))
        return [t for s in segs[:first_a] for t in s.ids]

    def encode_prompt(self, traj: "Trajectory", max_tokens: int, trim_block: int = 1
                      ) -> list[int]:
        """Prompt tokens for the agent's next turn in the (partial) trajectory ``traj``."""
        return self.encode_messages(trajectory_messages(traj, self.system), max_tokens,
                                    trim_block)


def build_examples(trajs: Iterable["Trajectory"], fmt: ChatFormat, max_tokens: int
                   ) -> tuple[list[Example], CutReport]:
    """Training examples of a dataset; raises ``EmptyMaskError`` when nothing is trained."""
    report, examples = CutReport(), []
    for t in trajs:
        ex, rep = fmt.encode_training(t, max_tokens)
        examples += ex
        report.add(rep)
    if report.trajectories == 0:
        raise EmptyMaskError("empty dataset: no trajectory to train on")
    if not examples and report.dropped_trained_turns:
        raise EmptyMaskError(
            f"no trained turn fits the context budget of {max_tokens} tokens "
            f"({report.dropped_trained_turns} turns dropped): raise the budget")
    if not examples or sum(e.n_trained for e in examples) == 0:
        raise EmptyMaskError(
            f"no trained token in {report.trajectories} trajectories: every step has "
            "train=False (or no steps); nothing to learn")
    return examples, report
