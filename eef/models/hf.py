"""``hf:<id-or-path>``: any HF causal LM as an eef policy (CPU or GPU, optional LoRA adapters).

``load_hf_policy("path/to/dir")`` loads the model and tokenizer of a directory in HF format
(a preset, an SFT checkpoint, a downloaded model) or a hub id already in the local HF cache.  A
directory holding a peft adapter (``adapter_config.json``) is loaded on top of its base model and
merged for inference.

``HFPolicy.act`` renders each context with ``eef.models.format.ChatFormat`` (the same tokens as
training), decodes the batch with ``eef.models.decode`` and returns each turn's text, cut after
the first complete ``Action:`` line (or at the end-of-turn marker).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from eef.models.decode import DecodeStats, PrefixCache, continuation_logprobs, decode
from eef.errors import ModelMismatchError, ModelNotFoundError
from eef.models.format import (ChatFormat, IdAliases, cut_after_action, format_options,
                               trajectory_messages)
from eef.models.precision import check_dtype, choose_dtype
from eef.policy import Sampling
from eef.react import render_turn

if TYPE_CHECKING:
    from eef.envs.base import TextEnv
    from eef.trajectory import Trajectory

def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s


def load_model_and_tokenizer(path: str, device: str = "cpu", dtype: str | None = None,
                             merge_lora: bool = True) -> tuple[Any, Any]:
    """The (model, tokenizer) of an HF directory or cached hub id; raises
    ``ModelNotFoundError`` / ``ModelMismatchError`` with a message saying what is wrong.
    ``dtype``: None keeps the checkpoint's weights as loaded (float32 unless the config says
    otherwise), ``auto`` picks bf16 where it is fast (``eef.models.precision``), or a name
    (``float32``, ``bfloat16``, ``float16``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eef.models.named import resolve
    path = resolve(path)  # named models (hf:smollm2-135m-instruct) and GGUF files
    p = Path(path).expanduser()
    if not p.exists() and _looks_like_path(path):
        raise ModelNotFoundError(f"hf:{path}: no such model directory")
    if p.is_dir() and not any((p / f).exists() for f in
                              ("config.json", "adapter_config.json")):
        raise ModelNotFoundError(f"hf:{path}: not an HF model directory (no config.json)")
    src = str(p) if p.exists() else path
    check_dtype(dtype)
    torch_dtype = None if dtype in (None, "auto") else choose_dtype(dtype, 0, device)
    try:
        adapter = p / "adapter_config.json"
        if adapter.exists():
            from peft import PeftModel
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            if not base:
                raise ModelNotFoundError(f"hf:{path}: adapter without base_model_name_or_path")
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
            model = PeftModel.from_pretrained(model, src)
            if merge_lora:
                model = model.merge_and_unload()
            tok_src = src if (p / "tokenizer_config.json").exists() else base
        else:
            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype)
            tok_src = src
        tok = AutoTokenizer.from_pretrained(tok_src)
    except (OSError, ValueError) as e:
        if isinstance(e, ModelNotFoundError):
            raise
        raise ModelNotFoundError(f"hf:{path}: cannot load ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''})") from e
    n_emb = model.get_input_embeddings().num_embeddings
    if len(tok) > n_emb:
        raise ModelMismatchError(f"hf:{path}: the tokenizer has {len(tok)} tokens but the "
                                 f"model's embedding table only {n_emb}: wrong tokenizer?")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if dtype == "auto":
        model.to(choose_dtype("auto", sum(p.numel() for p in model.parameters()), device))
    model.to(device).eval()
    return model, tok


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    reused_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache


@dataclass
class _Stop:
    """Per-tokenizer stop logic: end-of-turn ids, and the ids whose text holds a newline."""

    ids: list[int]
    newline_ids: set[int]
    eot_text: str


class HFPolicy:
    """A transformers causal LM behind the ``Policy`` protocol (batched)."""

    def __init__(self, model: Any, tokenizer: Any, spec: str = "hf:model",
                 system: str | None = None, max_context: int | None = None,
                 batch_size: int = 64, fast: bool | None = None, prefix_cache_mb: int = 512,
                 trim_block: int = 1, aliases: IdAliases | None = None,
                 kv_cache_mb: int = 2048, cut_note: str | None = None):
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        #: keys/values of recent turns, reused by the next turn of the same conversation
        #: (fast decoder only; ``prefix_cache_mb=0`` turns it off; ``clear()`` it after
        #: changing the weights in place)
        self.prefix_cache = PrefixCache(prefix_cache_mb << 20) if prefix_cache_mb > 0 else None
        self.format = ChatFormat(tokenizer, system=system, aliases=aliases,
                                 cut_note=cut_note)
        cfg = getattr(model, "config", None)
        self.max_context = int(max_context or getattr(cfg, "max_position_embeddings", 2048))
        self.batch_size = batch_size
        #: keys/values of one decode call stay under this many MB: a batch whose rows x
        #: (longest prompt + new tokens) would need more is split (the memory bound of rollouts)
        self.kv_cache_mb = int(kv_cache_mb)
        self.fast = fast
        #: prompts over max_context drop their oldest exchanges in blocks of this many
        #: (``ChatFormat.encode_messages``): a stable window the prefix cache can reuse
        self.trim_block = max(1, int(trim_block))
        self.stats = DecodeStats()
        newline = {i for i in range(len(tokenizer))
                   if "\n" in tokenizer.decode([i], skip_special_tokens=False)}
        self._stop = _Stop(self.format.stop_token_ids, newline, self.format.end_of_turn)

    # -- the Policy protocol ----------------------------------------------------------------
    def act(self, contexts: Sequence["Trajectory"], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        chats = [trajectory_messages(c, self.format.system) for c in contexts]
        out = self.complete(chats, sampling, seeds, stop_after_action=True, system_in_chats=True)
        #: tokens generated, prompt tokens and prompt tokens reused from the prefix cache, per
        #: context of the last call (read by the rollout engine's budget)
        self.last_generated_tokens = [c.completion_tokens for c in out]
        self.last_prompt_tokens = [c.prompt_tokens for c in out]
        self.last_reused_tokens = [c.reused_tokens for c in out]
        return [c.text for c in out]

    def rank_actions(self, contexts: Sequence["Trajectory"], thoughts: Sequence[str],
                     candidates: Sequence[Sequence[str]],
                     sampling: Sampling | None = None) -> list[list[float]]:
        """For each context, the log-probability of the turn ``Thought: <thought>\nAction:
        <candidate>`` (its end-of-turn token included) for every candidate action, counted from
        the first token where the candidates differ: equal to the whole turn's log-probability
        up to a constant per context, so the ranking is the model's own.  ``sampling`` gives
        the prompt budget (``max_context - max_new_tokens``), as for ``act``."""
        s = sampling or Sampling()
        budget = self.max_context - s.max_new_tokens
        out: list[list[float]] = []
        for ctx, thought, cands in zip(contexts, thoughts, candidates):
            if not cands:
                out.append([])
                continue
            chat = trajectory_messages(ctx, self.format.system)
            prompt = self.format.encode_messages(chat, budget, self.trim_block)
            turns = [self.turn_tokens(chat, render_turn(thought, a)) for a in cands]
            k = 0  # tokens every candidate's turn starts with: part of the prefix
            while all(len(t) > k + 1 and t[k] == turns[0][k] for t in turns):
                k += 1
            out.append(continuation_logprobs(self.model, prompt + turns[0][:k],
                                             [t[k:] for t in turns], fast=self.fast,
                                             prefix_cache=self.prefix_cache))
        return out

    def continue_turns(self, contexts: Sequence["Trajectory"], partials: Sequence[str],
                       sampling: Sampling | None = None,
                       seeds: Sequence[int] | None = None) -> list[str]:
        """For each context, the agent's turn forced to start with ``partials[i]`` (e.g.
        ``Thought: ...\nAction: search[``) and continued by the model up to the end of that
        line: constrained decoding of an action that must fill a template."""
        s = sampling or Sampling()
        budget = self.max_context - s.max_new_tokens
        prompts, chats = [], []
        for ctx, part in zip(contexts, partials):
            chat = trajectory_messages(ctx, self.format.system)
            head = self.turn_tokens(chat, part, end_of_turn=False)
            prompts.append(self.format.encode_messages(chat, budget - len(head), self.trim_block)
                           + head)
            chats.append(chat)
        out = self._generate(prompts, s, seeds, False, ["\n"])
        texts = [p + c.text.split("\n")[0] for p, c in zip(partials, out)]
        if self.format.aliases is not None:
            texts = [self.format.aliases.decode(t, chat) for t, chat in zip(texts, chats)]
        return texts

    def turn_tokens(self, chat: Sequence[dict[str, str]], turn: str,
                    end_of_turn: bool = True) -> list[int]:
        """The tokens of assistant turn ``turn`` after ``chat`` as training sees them (aliases
        applied, the tokens the loss covers); ``end_of_turn=False`` drops the trailing
        end-of-turn token(s), leaving a head the model can continue."""
        chat = list(chat)
        n_turn = sum(m["role"] == "assistant" for m in chat)
        seg = self.format.segments(chat + [{"role": "assistant", "content": turn}], [n_turn])[-1]
        ids = [i for i, m in zip(seg.ids, seg.mask) if m]
        while not end_of_turn and ids and ids[-1] in self._stop.ids:
            ids.pop()
        return ids

    # -- chat completion (also used by the server) --------------------------------------------
    def chat(self, chats: Sequence[Sequence[dict[str, str]]], sampling: Sampling | None = None,
             seeds: Sequence[int] | None = None, stop_after_action: bool = False,
             stop: Sequence[str] = (), system_in_chats: bool = False) -> list[str]:
        """One completion per chat (lists of ``{"role", "content"}`` messages)."""
        return [c.text for c in self.complete(chats, sampling, seeds, stop_after_action, stop,
                                              system_in_chats)]

    def complete(self, chats: Sequence[Sequence[dict[str, str]]],
                 sampling: Sampling | None = None, seeds: Sequence[int] | None = None,
                 stop_after_action: bool = False, stop: Sequence[str] = (),
                 system_in_chats: bool = False) -> list["Completion"]:
        """Like ``chat`` with token counts and the finish reason of each completion."""
        s = sampling or Sampling()
        if seeds is not None and len(seeds) != len(chats):
            raise ValueError(f"{len(seeds)} seeds for {len(chats)} contexts")
        budget = self.max_context - s.max_new_tokens
        if budget < 8:
            raise ValueError(f"max_new_tokens={s.max_new_tokens} leaves no room for a prompt in "
                             f"a context of {self.max_context} tokens")
        if self.format.system and not system_in_chats:
            chats = [c if c and c[0]["role"] == "system" else
                     [{"role": "system", "content": self.format.system}, *c] for c in chats]
        prompts = [self.format.encode_messages(c, budget, self.trim_block) for c in chats]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Completion] = [Completion("", 0, 0, "length")] * len(prompts)
        stop = [x for x in stop if x]
        for idx in self.batches([len(prompts[i]) for i in order], s.max_new_tokens):
            idx = [order[i] for i in idx]
            texts = self._generate([prompts[i] for i in idx], s,
                                   [seeds[i] for i in idx] if seeds is not None else None,
                                   stop_after_action, stop)
            for i, t in zip(idx, texts):
                out[i] = t
        if self.format.aliases is not None:  # the model wrote aliases: back to identifiers
            out = [replace(c, text=self.format.aliases.decode(c.text, chat))
                   for c, chat in zip(out, chats)]
        return out

    def kv_bytes_per_token(self) -> int:
        """Bytes of keys and values one token takes in the decoder's cache."""
        cfg = self.model.config
        n_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        size = next(self.model.parameters()).element_size()
        return 2 * cfg.num_hidden_layers * n_kv * head * size

    def batches(self, lengths: Sequence[int], max_new: int) -> list[list[int]]:
        """Index batches of prompts sorted by length (ascending): at most ``batch_size`` rows,
        and rows x (longest prompt + ``max_new``) cache tokens within ``kv_cache_mb`` (one
        row at least)."""
        budget = (self.kv_cache_mb << 20) // self.kv_bytes_per_token()
        out: list[list[int]] = []
        for i, n in enumerate(lengths):
            if out and len(out[-1]) < self.batch_size and \
                    (len(out[-1]) + 1) * (n + max_new) <= budget:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def _cut(self, text: str, stop_after_action: bool, stop: Sequence[str]) -> tuple[str, bool]:
        """The response text and whether it is complete."""
        cut, done = text, False
        for marker in ([self._stop.eot_text] if self._stop.eot_text else []) + list(stop):
            i = cut.find(marker)
            if i >= 0:
                cut, done = cut[:i], True
        if stop_after_action:
            cut, found = cut_after_action(cut)
            done = done or found
        return cut, done

    def _generate(self, prompts: list[list[int]], s: Sampling, seeds: Sequence[int] | None,
                  stop_after_action: bool, stop: Sequence[str]) -> list["Completion"]:
        tok = self.tokenizer
        text_checks = stop_after_action or bool(stop) or (
            self._stop.eot_text and not self.format.stop_token_ids)

        def check(row: int, ids: list[int]) -> bool:
            return self._cut(tok.decode(ids, skip_special_tokens=False),
                             stop_after_action, stop)[1]

        # stop strings can end on any token; the action line ends on a newline token
        check_ids = None if (stop or len(self.format.stop_token_ids) == 0) \
            else self._stop.newline_ids
        new = decode(self.model, prompts, max_new_tokens=s.max_new_tokens,
                     temperature=s.temperature, top_p=s.top_p, seeds=seeds,
                     stop_ids=self._stop.ids, pad_id=int(tok.pad_token_id),
                     stop_check=check if text_checks else None, check_ids=check_ids,
                     fast=self.fast, stats=self.stats, prefix_cache=self.prefix_cache,
                     reused_out=(reused := []), no_repeat_ngram=s.no_repeat_ngram,
                     line_ids=self._stop.newline_ids)
        out = []
        for p, ids, n_reused in zip(prompts, new, reused):
            n = len(ids)
            ended = bool(ids) and ids[-1] in self._stop.ids
            ids = [i for i in ids if i not in self._stop.ids]
            text, cut = self._cut(tok.decode(ids, skip_special_tokens=True), stop_after_action,
                                  stop)
            out.append(Completion(text.strip(), len(p), n,
                                  "stop" if ended or cut or n < s.max_new_tokens else "length",
                                  n_reused))
        return out


def load_hf_policy(rest: str, env: "TextEnv | None" = None, **kw: Any) -> HFPolicy:
    """The policy of spec ``hf:<rest>``.  Keywords: ``device`` (``cpu``), ``dtype``
    (``auto``, the default: bf16 where the hardware has it for models of 50M parameters and
    more, else float32; or ``float32``, ``bfloat16``), ``system`` (system message), ``max_context``, ``batch_size``,
    ``fast`` (force/skip the static-cache decoder), ``prefix_cache_mb`` (memory for reusing
    earlier turns' keys/values; 0: off), ``trim_block`` (drop the oldest exchanges of an
    over-long prompt in blocks of this many), ``kv_cache_mb`` (keys/values of one decode
    call stay under it: larger batches are split)."""
    if not rest:
        raise ModelNotFoundError("hf: needs a model id or directory (hf:PATH)")
    model, tok = load_model_and_tokenizer(rest, device=kw.pop("device", "cpu"),
                                          dtype=kw.pop("dtype", "auto"))
    known = {"system", "max_context", "batch_size", "fast", "prefix_cache_mb", "trim_block",
             "kv_cache_mb"}
    unknown = set(kw) - known
    if unknown:
        raise TypeError(f"load_hf_policy: unknown options {sorted(unknown)}")
    return HFPolicy(model, tok, spec=f"hf:{rest}", **kw, **format_options(rest))
