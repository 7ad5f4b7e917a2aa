"""Batched decoding with a preallocated KV cache (the fast path of ``hf:`` policies on CPU).

``decode(model, prompts, ...)`` prefills the whole (left-padded) batch once, then decodes all
sequences together, one token per step, each row stopping on its own (a stop token, or a
caller's ``stop_check`` such as "the action line is complete").  Finished rows are dropped from
the batch (the cache is compacted) so late steps cost only the rows still running.

For Llama-family models (``llama``, ``mistral``, ``qwen2``: RMSNorm, RoPE, SwiGLU, grouped
attention) the forward pass is a direct transcription on the model's own weights with a static
cache: ``transformers``' ``generate`` spends most of its time outside the matmuls on a tiny model
(``benchmarks/decode.py`` measures both).  Other architectures run the HF forward with its own
cache inside the same loop.  Greedy outputs equal ``generate``'s (tested).

Sampling: temperature and top-p; with ``seeds``, row ``i`` draws from its own
``torch.Generator(seed_i)``, so a row's sample does not depend on the other rows of the batch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

FAST_MODEL_TYPES = ("llama", "mistral", "qwen2")
#: new prompt tokens per packed prefill pass (bounds its activations: ~25 MB per 1,000 tokens
#: for a 135M model; beyond ~2,000 the matmuls gain little)
PREFILL_TOKENS = 4096


@dataclass
class DecodeStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    steps: int = 0
    fast: bool = False
    reused_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache
    #: keys attended to, summed over every computed position (prefill and new tokens; fast
    #: path): the attention work is 4 x heads x head_dim x this, per layer
    attended: int = 0
    decode_attended: int = 0  # the part of ``attended`` read by one-token decode steps


class PrefixCache:
    """Keys/values of recent sequences, so that a prompt which extends one (an agent's next
    turn: the same conversation plus its last answer and the new observation) prefills only
    what is new.  The reusable part of a prompt is its longest common prefix with a stored
    sequence (keys/values of a position depend only on the tokens up to it), at most all but
    its last token, and only from ``min_tokens`` up.  Least recently used sequences are
    dropped beyond ``max_bytes``; a sequence that extends a stored one replaces it.

    The stored values belong to the weights that computed them: ``clear()`` after changing
    the model's weights in place."""

    def __init__(self, max_bytes: int = 512 << 20, min_tokens: int = 32):
        self.max_bytes, self.min_tokens = int(max_bytes), int(min_tokens)
        self.entries: OrderedDict[int, tuple[np.ndarray, list, int]] = OrderedDict()
        self.bytes, self._next = 0, 0
        self.lock = threading.Lock()  # one policy may decode in several threads

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()
            self.bytes = 0

    def lookup(self, prompt: Sequence[int]) -> tuple[int, list | None]:
        """``(n, kv)``: the first ``n`` tokens of ``prompt`` have the keys/values ``kv``
        (per layer, at least ``n`` positions long); ``(0, None)`` when nothing reusable."""
        with self.lock:
            return self._lookup(prompt)

    def _lookup(self, prompt: Sequence[int]) -> tuple[int, list | None]:
        if not self.entries:
            return 0, None
        t = np.asarray(prompt, dtype=np.int64)
        best, best_key = 0, None
        for key, (toks, _, _) in self.entries.items():
            n = min(len(toks), len(t) - 1)
            if n <= best:
                continue
            eq = toks[:n] == t[:n]
            m = int(np.argmin(eq)) if not eq.all() else n
            if m > best:
                best, best_key = m, key
        if best < self.min_tokens or best_key is None:
            return 0, None
        self.entries.move_to_end(best_key)
        return best, self.entries[best_key][1]

    def add(self, tokens: Sequence[int], kv: list) -> None:
        with self.lock:
            self._add(tokens, kv)

    def _add(self, tokens: Sequence[int], kv: list) -> None:
        t = np.asarray(tokens, dtype=np.int64)
        if len(t) < self.min_tokens:
            return
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if size > self.max_bytes:
            return
        for key, (toks, _, nb) in list(self.entries.items()):  # superseded: a prefix of t
            if len(toks) <= len(t) and bool((toks == t[:len(toks)]).all()):
                del self.entries[key]
                self.bytes -= nb
        self.entries[self._next] = (t, kv, size)
        self._next += 1
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, nb) = self.entries.popitem(last=False)
            self.bytes -= nb


def _base(model: Any) -> Any:
    """The ``*ForCausalLM`` under a peft wrapper, if any."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def supports_fast(model: Any) -> bool:
    m = _base(model)
    cfg = m.config
    if getattr(cfg, "model_type", "") not in FAST_MODEL_TYPES:
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) \
            and cfg.model_type == "mistral":
        return False
    inner = getattr(m, "model", None)
    return inner is not None and hasattr(inner, "rotary_emb") and hasattr(inner, "layers")


class _LlamaRunner:
    """Forward pass of a Llama-family model over a static KV cache.

    The q/k/v projections and the gate/up projections are concatenated once into one matrix each
    (fewer, larger matmuls per step); RoPE tables are computed once for all positions.
    """

    def __init__(self, model: Any, max_pos: int):
        m = _base(model)
        cfg = m.config
        self.m = m
        self.inner = m.model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        p = next(m.parameters())
        self.dtype, self.device = p.dtype, p.device
        self.cos = self.sin = torch.empty(0)
        self.rope(max_pos)
        self.layers = []
        for layer in self.inner.layers:
            at, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat([at.q_proj.weight, at.k_proj.weight, at.v_proj.weight]).detach()
            bias = None
            if at.q_proj.bias is not None:
                bias = torch.cat([at.q_proj.bias, at.k_proj.bias, at.v_proj.bias]).detach()
            gu = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
            self.layers.append((layer.input_layernorm, qkv, bias, at.o_proj,
                                layer.post_attention_layernorm, gu, mlp.down_proj,
                                getattr(at, "scaling", None)))
        self.q_dim = self.n_heads * self.head_dim
        self.kv_dim = self.n_kv * self.head_dim

    def rope(self, n: int) -> None:
        """RoPE tables for positions ``0 .. n-1`` (grown, never shrunk)."""
        if self.cos.shape[0] >= n:
            return
        n = max(n, 2 * self.cos.shape[0])
        rot = self.inner.rotary_emb
        scale = float(getattr(rot, "attention_scaling", 1.0))
        freqs = torch.arange(n, device=self.device).float()[:, None] * rot.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = (emb.cos() * scale).to(self.dtype)
        self.sin = (emb.sin() * scale).to(self.dtype)

    @staticmethod
    def _norm(x: torch.Tensor, ln: Any) -> torch.Tensor:
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ln.variance_epsilon)
        return ln.weight * x.to(dt)

    @staticmethod
    def _rot(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., h:], x[..., :h]), dim=-1) * sin

    def _attend_one(self, q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor, scaling: float | None) -> torch.Tensor:
        """Attention of a single query position: q [B, H, 1, D], kt [B, Hkv, D, S] (keys
        stored transposed, so this is a plain strided matmul), v [B, Hkv, S, D]."""
        B, H, _, D = q.shape
        g = H // self.n_kv  # query heads per kv head
        q = q.reshape(B, self.n_kv, g, D)
        s = torch.matmul(q, kt) * (scaling or D ** -0.5)  # [B, Hkv, g, S]
        s = s.masked_fill(~mask.view(B, 1, 1, -1), float("-inf"))
        o = torch.matmul(torch.softmax(s.float(), dim=-1).to(v.dtype), v)  # [B, Hkv, g, D]
        return o.view(B, H, 1, D)

    def alloc(self, batch: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer: keys [B, Hkv, D, L] (transposed) and values [B, Hkv, L, D]."""
        kshape = (batch, self.n_kv, self.head_dim, length)
        vshape = (batch, self.n_kv, length, self.head_dim)
        return [(torch.empty(kshape, dtype=self.dtype, device=self.device),
                 torch.empty(vshape, dtype=self.dtype, device=self.device)) for _ in self.layers]

    def prefill(self, ids: torch.Tensor, pos: torch.Tensor, segs: list[tuple[int, int, int, int]],
                cache: list, every_position: bool = False) -> torch.Tensor:
        """Logits of the last position of each segment (of every position with
        ``every_position``), for the rows' new tokens packed into one sequence (no padding):
        the linear layers see all of them at once, attention runs per row.  ``ids``/``pos``:
        [N]; ``segs``: per row ``(row, first cache column of the row, first column to compute,
        end column)``; the row's keys/values before the column to compute are already in
        ``cache``."""
        N = ids.shape[0]
        x = self.inner.embed_tokens(ids)[None]  # [1, N, d]
        cos, sin = self.cos[pos][None, None], self.sin[pos][None, None]  # [1, 1, N, D]
        gqa = self.n_kv != self.n_heads
        qd, kvd, hd = self.q_dim, self.kv_dim, self.head_dim
        masks = {}
        for (ln1, qkv_w, qkv_b, o_proj, ln2, gu_w, down, scaling), (kc, vc) in \
                zip(self.layers, cache):
            qkv = F.linear(self._norm(x, ln1), qkv_w, qkv_b)
            q = self._rot(qkv[..., :qd].view(1, N, -1, hd).transpose(1, 2), cos, sin)
            k = self._rot(qkv[..., qd:qd + kvd].view(1, N, -1, hd).transpose(1, 2), cos, sin)
            v = qkv[..., qd + kvd:].view(1, N, -1, hd).transpose(1, 2)
            outs, off = [], 0
            for row, lo, s, e in segs:
                T = e - s
                kj, vj = k[:, :, off:off + T], v[:, :, off:off + T]
                kc[row, :, :, s:e] = kj[0].transpose(-1, -2)
                vc[row, :, s:e] = vj[0]
                qj = q[:, :, off:off + T]
                if s == lo:  # nothing cached before: plain causal attention
                    o = F.scaled_dot_product_attention(qj, kj, vj, is_causal=True,
                                                       scale=scaling, enable_gqa=gqa)
                else:  # after a reused prefix of s - lo tokens
                    n = s - lo
                    if (T, n) not in masks:
                        masks[(T, n)] = torch.ones(T, n + T, dtype=torch.bool,
                                                   device=ids.device).tril(diagonal=n)
                    # the keys copied to [.., S, D] first: on the transposed view the CPU
                    # kernel runs 2.6-8x slower (docs/models.md, "A slow path found by the
                    # kernel rates")
                    o = F.scaled_dot_product_attention(
                        qj, kc[row:row + 1, :, :, lo:e].transpose(-1, -2).contiguous(),
                        vc[row:row + 1, :, lo:e], attn_mask=masks[(T, n)], scale=scaling,
                        enable_gqa=gqa)
                outs.append(o)
                off += T
            o = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
            x = x + o_proj(o.transpose(1, 2).reshape(1, N, qd))
            gu = F.linear(self._norm(x, ln2), gu_w)
            g, u = gu.chunk(2, dim=-1)
            x = x + down(F.silu(g) * u)
        if every_position:
            return self.m.lm_head(self._norm(x[0], self.inner.norm)).float()
        last = torch.tensor([0] + [e - s for _, _, s, e in segs], device=ids.device).cumsum(0)
        x = self._norm(x[0, last[1:] - 1], self.inner.norm)
        return self.m.lm_head(x).float()

    def step(self, tok: torch.Tensor, pos: torch.Tensor, cache: list, col: int,
             mask: torch.Tensor) -> torch.Tensor:
        """Logits after one new token per row (the prefill is ``prefill``).  ``tok``/``pos``:
        [B, 1]; the new keys go to cache column ``col``; ``mask``: [B, 1, 1, cache length]
        bool (True = attend).  Attention runs over the whole cache (the mask hides columns not
        written yet): a slice of it would be copied at every step."""
        B = tok.shape[0]
        x = self.inner.embed_tokens(tok)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]
        qd, kvd, hd = self.q_dim, self.kv_dim, self.head_dim
        for (ln1, qkv_w, qkv_b, o_proj, ln2, gu_w, down, scaling), (kc, vc) in \
                zip(self.layers, cache):
            qkv = F.linear(self._norm(x, ln1), qkv_w, qkv_b)
            q = self._rot(qkv[..., :qd].view(B, 1, -1, hd).transpose(1, 2), cos, sin)
            k = self._rot(qkv[..., qd:qd + kvd].view(B, 1, -1, hd).transpose(1, 2), cos, sin)
            kc[:, :, :, col:col + 1] = k.transpose(-1, -2)
            vc[:, :, col:col + 1] = qkv[..., qd + kvd:].view(B, 1, -1, hd).transpose(1, 2)
            # one query per row: plain matmuls beat the CPU flash kernel here
            o = self._attend_one(q, kc, vc, mask, scaling)
            x = x + o_proj(o.transpose(1, 2).reshape(B, 1, qd))
            gu = F.linear(self._norm(x, ln2), gu_w)
            g, u = gu.chunk(2, dim=-1)
            x = x + down(F.silu(g) * u)
        x = self._norm(x[:, -1], self.inner.norm)
        return self.m.lm_head(x).float()


def _sample(logits: torch.Tensor, temperature: float, top_p: float,
            gens: list[torch.Generator | None]) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(dim=-1, descending=True)
        drop = sp.cumsum(-1) - sp > top_p  # keep the smallest prefix whose mass reaches top_p
        sp = sp.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
    out = torch.empty(probs.shape[0], dtype=torch.long, device=probs.device)
    for i, g in enumerate(gens):
        out[i] = torch.multinomial(probs[i], 1, generator=g)[0]
    return out


def _ban_repeats(logits: torch.Tensor, outs: list[list[int]], n: int,
                 line_ids: set[int]) -> torch.Tensor:
    """``logits`` with, for each row, the tokens that would repeat an n-gram of the row's
    current line (its new tokens since the last line break) set to -inf."""
    banned: list[tuple[int, int]] = []
    for a, seq in enumerate(outs):
        k = len(seq)
        while k > 0 and seq[k - 1] not in line_ids:
            k -= 1
        line = seq[k:]
        if len(line) < n:
            continue
        tail = line[len(line) - n + 1:]
        banned += [(a, line[i + n - 1]) for i in range(len(line) - n + 1)
                   if line[i:i + n - 1] == tail]
    if not banned:
        return logits
    logits = logits.clone()
    rows, toks = zip(*banned)
    logits[list(rows), list(toks)] = float("-inf")
    return logits


@torch.inference_mode()
def decode(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 96,
           temperature: float = 0.0, top_p: float = 1.0, seeds: Sequence[int] | None = None,
           stop_ids: Sequence[int] = (), pad_id: int = 0,
           stop_check: Callable[[int, list[int]], bool] | None = None,
           check_ids: set[int] | None = None, fast: bool | None = None,
           prefill_tokens: int = PREFILL_TOKENS, stats: DecodeStats | None = None,
           prefix_cache: "PrefixCache | None" = None,
           reused_out: list[int] | None = None, no_repeat_ngram: int = 0,
           line_ids: set[int] | None = None) -> list[list[int]]:
    """New tokens for each prompt (stop token included when one ended the row).

    ``stop_check(row, new_ids) -> bool`` is called after a token in ``check_ids`` (every token
    when ``check_ids`` is None) and ends that row when it returns True.  ``fast=None`` uses the
    static-cache path when the architecture supports it.  ``prefix_cache`` (fast path only):
    keys/values of earlier sequences; a prompt that starts like one of them prefills only the
    rest, and every row's sequence is added to it at the end; ``reused_out`` (a list) receives
    each prompt's count of tokens taken from it.  ``no_repeat_ngram`` = n > 1: no n-gram of
    new tokens occurs twice within a line (lines end at a token of ``line_ids``).
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("decode: empty prompt")
    B = len(prompts)
    dev = next(model.parameters()).device
    if fast is None:
        fast = supports_fast(model)
    gens: list[torch.Generator | None] = [None] * B
    if temperature > 0:
        seeds = list(seeds) if seeds is not None else [int(s) for s in
                                                       torch.randint(0, 2**31 - 1, (B,))]
        gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds]
    P = max(len(p) for p in prompts)
    reuse = prefix_cache if fast else None
    hits = [reuse.lookup(p) for p in prompts] if reuse is not None else None
    if reused_out is not None:
        reused_out[:] = [n for n, _ in hits] if hits is not None else [0] * B
    rows = list(range(B))  # rows[j]: the prompt in batch row j (batch rows shrink, see below)
    lens = torch.tensor([len(p) for p in prompts], device=dev)
    ids = torch.full((B, P), pad_id, dtype=torch.long, device=dev)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(list(p), dtype=torch.long)
    pad = P - lens  # left padding per row
    stop = torch.tensor(sorted(set(stop_ids)) or [-1], device=dev)
    out: list[list[int]] = [[] for _ in range(B)]
    if stats is not None:
        stats.prompt_tokens += int(lens.sum())
        stats.fast = fast
    if max_new_tokens <= 0:
        return out
    if fast:
        step = _FastLoop(model, ids, pad, max_new_tokens, prefill_tokens, hits)
        if stats is not None:
            for p, (n, _) in zip(prompts, hits or [(0, None)] * B):
                T = len(p) - n
                stats.attended += T * n + T * (T + 1) // 2
            if hits is not None:
                stats.reused_tokens += sum(n for n, _ in hits)
    else:
        step = _HFLoop(model, ids, pad)
    logits = step.first()

    def keep_kv(js: list[int]) -> None:  # rows leaving the batch: their K/V to the cache
        if reuse is not None:
            for j in js:
                r = rows[j]
                fed = list(prompts[r]) + out[r][:-1]  # the last token was never fed
                reuse.add(fed, step.export(j, len(out[r]) - 1))
    # Finished rows stay in the batch (fed a pad token, outputs ignored) until a quarter of it
    # has finished: compacting copies the whole cache, as costly as a step.
    alive = list(range(B))  # batch rows still decoding
    for t in range(max_new_tokens):
        lg = logits if len(alive) == len(rows) else logits[torch.tensor(alive, device=dev)]
        if no_repeat_ngram > 0:
            lg = _ban_repeats(lg, [out[rows[j]] for j in alive], no_repeat_ngram,
                              line_ids or set())
        nxt = _sample(lg, temperature, top_p, [gens[rows[j]] for j in alive])
        done = torch.isin(nxt, stop)
        keep: list[int] = []
        for a, j in enumerate(alive):
            r, tok = rows[j], int(nxt[a])
            out[r].append(tok)
            fin = bool(done[a])
            if not fin and stop_check is not None and (check_ids is None or tok in check_ids):
                fin = stop_check(r, out[r])
            if not fin:
                keep.append(a)
        if stats is not None:
            stats.new_tokens += len(alive)
            stats.steps += 1
            if fast:  # the token fed next attends to its prompt and the tokens so far
                n = sum(len(prompts[rows[j]]) + t + 1 for j in alive)
                stats.attended += n
                stats.decode_attended += n
        if not keep or t == max_new_tokens - 1:
            keep_kv(alive)
            break
        if len(keep) < len(alive):
            kept = set(keep)
            keep_kv([j for a, j in enumerate(alive) if a not in kept])
        feed = torch.full((len(rows),), pad_id, dtype=torch.long, device=dev)
        alive, nxt = [alive[a] for a in keep], nxt[torch.tensor(keep, device=dev)]
        feed[torch.tensor(alive, device=dev)] = nxt
        if len(alive) <= 0.75 * len(rows):
            idx = torch.tensor(alive, device=dev)
            step.select(idx)
            feed, rows, alive = feed[idx], [rows[j] for j in alive], list(range(len(alive)))
        logits = step.next(feed)
    return out


@torch.inference_mode()
def continuation_logprobs(model: Any, prefix: Sequence[int], conts: Sequence[Sequence[int]], *,
                          fast: bool | None = None,
                          prefix_cache: "PrefixCache | None" = None) -> list[float]:
    """``log p(cont | prefix)`` for each continuation (summed over its tokens): how likely the
    model finds each of several answers to one prompt.  The prefix is computed once (and only
    past what ``prefix_cache`` holds, fast path); every continuation attends to it.  Used to
    choose among a state's admissible actions by the model's own likelihood."""
    if not prefix or not conts or any(len(c) == 0 for c in conts):
        raise ValueError("continuation_logprobs: empty prefix or continuation")
    dev = next(model.parameters()).device
    P, B = len(prefix), len(conts)
    if fast is None:
        fast = supports_fast(model)
    if not fast:
        L = P + max(len(c) for c in conts)
        ids = torch.zeros((B, L), dtype=torch.long, device=dev)
        attn = torch.zeros((B, L), dtype=torch.long, device=dev)
        for j, c in enumerate(conts):
            ids[j, :P + len(c)] = torch.tensor(list(prefix) + list(c))
            attn[j, :P + len(c)] = 1
        lp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits.float(), -1)
        return [float(sum(lp[j, P - 1 + t, tok] for t, tok in enumerate(c)))
                for j, c in enumerate(conts)]
    r = _runner(model, P + max(len(c) for c in conts))
    cache = r.alloc(B, P + max(len(c) for c in conts))
    n, kv = prefix_cache.lookup(prefix) if prefix_cache is not None else (0, None)
    for (kc, vc), (k, v) in zip(cache, kv or []):
        kc[0, :, :, :n] = k[:, :, :n]
        vc[0, :, :n] = v[:, :n]
    pre = torch.tensor(list(prefix[n:]), dtype=torch.long, device=dev)
    first = torch.log_softmax(r.prefill(pre, torch.arange(n, P, device=dev), [(0, 0, n, P)],
                                        cache), -1)[0]
    for kc, vc in cache:  # every row starts with the prefix
        kc[1:, :, :, :P] = kc[:1, :, :, :P]
        vc[1:, :, :P] = vc[:1, :, :P]
    out = [float(first[c[0]]) for c in conts]
    rest = [(j, c) for j, c in enumerate(conts) if len(c) > 1]
    if rest:  # position P + t - 1 predicts token t of the continuation
        ids = torch.tensor([t for _, c in rest for t in c[:-1]], dtype=torch.long, device=dev)
        pos = torch.cat([torch.arange(P, P + len(c) - 1, device=dev) for _, c in rest])
        lg = torch.log_softmax(r.prefill(ids, pos, [(j, 0, P, P + len(c) - 1) for j, c in rest],
                                         cache, every_position=True), -1)
        off = 0
        for j, c in rest:
            tgt = torch.tensor(list(c[1:]), device=dev)
            out[j] += float(lg[off:off + len(c) - 1].gather(1, tgt[:, None]).sum())
            off += len(c) - 1
    return out


_RUNNERS_LOCK = threading.Lock()


def _runner(model: Any, max_pos: int) -> _LlamaRunner:
    """The model's runner, built once and rebuilt only when its weights change (new tensors
    or an in-place update): building one concatenates every projection matrix."""
    m = _base(model)
    key = tuple((p.data_ptr(), p._version) for p in m.parameters())
    with _RUNNERS_LOCK:
        got = getattr(m, "_eef_runner", None)
        if got is None or got[0] != key:
            got = (key, _LlamaRunner(m, max_pos))
            m._eef_runner = got  # a cycle the garbage collector frees with the model
    got[1].rope(max_pos)
    return got[1]


class _FastLoop:
    def __init__(self, model: Any, ids: torch.Tensor, pad: torch.Tensor, max_new: int,
                 prefill_tokens: int = PREFILL_TOKENS,
                 hits: list[tuple[int, Any]] | None = None):
        B, P = ids.shape
        self.r = _runner(model, P + max_new)
        self.P, self.t = P, 0
        self.cache = self.r.alloc(B, P + max_new)
        self.pad = pad
        self.ids, self.prefill_tokens = ids, max(1, int(prefill_tokens))
        # padding columns are masked out but must hold finite values (0 x inf is nan)
        width = int(pad.max())
        for kc, vc in self.cache:
            kc[:, :, :, :width] = 0
            vc[:, :, :width] = 0
            kc[:, :, :, P:] = 0
            vc[:, :, P:] = 0
        # reused prefixes: row i's first n_i tokens (columns pad_i .. pad_i+n_i) come cached
        self.reused = torch.zeros(B, dtype=torch.long, device=pad.device)
        for i, (n, kv) in enumerate(hits or []):
            if n:
                p0 = int(pad[i])
                for (kc, vc), (k, v) in zip(self.cache, kv):
                    kc[i, :, :, p0:p0 + n] = k[:, :, :n]
                    vc[i, :, p0:p0 + n] = v[:, :n]
                self.reused[i] = n

    def first(self) -> torch.Tensor:
        """The prefill: every row's uncached prompt tokens, packed without padding into passes
        of about ``prefill_tokens`` tokens; the logits of each row's last prompt position."""
        B, P = self.ids.shape
        pads, starts = self.pad.tolist(), (self.pad + self.reused).tolist()
        chunks: list[list[tuple[int, int, int, int]]] = [[]]
        n = 0
        for j in range(B):
            if chunks[-1] and n + P - starts[j] > self.prefill_tokens:
                chunks.append([])
                n = 0
            chunks[-1].append((j, pads[j], starts[j], P))
            n += P - starts[j]
        outs = []
        for segs in chunks:
            ids = torch.cat([self.ids[j, s:e] for j, _, s, e in segs])
            pos = torch.cat([torch.arange(s - lo, e - lo, device=ids.device)
                             for _, lo, s, e in segs])
            outs.append(self.r.prefill(ids, pos, segs, self.cache))
        del self.ids
        return torch.cat(outs)

    def export(self, j: int, n_new: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of row ``j``'s keys/values: its prompt and its first ``n_new`` new tokens."""
        lo, hi = int(self.pad[j]), self.P + n_new
        return [(k[j, :, :, lo:hi].clone(), v[j, :, lo:hi].clone()) for k, v in self.cache]

    def select(self, idx: torch.Tensor) -> None:
        self.cache = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in self.cache]
        self.pad = self.pad[idx]

    def next(self, tok: torch.Tensor) -> torch.Tensor:
        col = self.P + self.t
        self.t += 1
        pos = (col - self.pad)[:, None]
        ar = torch.arange(self.cache[0][1].shape[2], device=tok.device)
        mask = ((ar[None] >= self.pad[:, None]) & (ar <= col)[None])[:, None, None, :]
        return self.r.step(tok[:, None], pos, self.cache, col, mask)


class _HFLoop:
    """Same loop over the HF forward with its dynamic cache (any causal LM)."""

    def __init__(self, model: Any, ids: torch.Tensor, pad: torch.Tensor):
        self.model, self.ids = model, ids
        P = ids.shape[1]
        ar = torch.arange(P, device=ids.device)
        self.attn = (ar[None] >= pad[:, None]).long()
        self.pos = (self.attn.cumsum(-1) - 1).clamp(min=0)
        self.past = None

    def first(self) -> torch.Tensor:
        o = self.model(input_ids=self.ids, attention_mask=self.attn, position_ids=self.pos,
                       use_cache=True)
        self.past = o.past_key_values
        return o.logits[:, -1].float()

    def select(self, idx: torch.Tensor) -> None:
        self.attn, self.pos = self.attn[idx], self.pos[idx]
        if hasattr(self.past, "batch_select_indices"):
            self.past.batch_select_indices(idx)
        else:
            self.past = tuple((k[idx], v[idx]) for k, v in self.past)

    def next(self, tok: torch.Tensor) -> torch.Tensor:
        self.attn = torch.cat([self.attn, torch.ones_like(self.attn[:, :1])], dim=1)
        self.pos = self.pos[:, -1:] + 1
        o = self.model(input_ids=tok[:, None], attention_mask=self.attn, position_ids=self.pos,
                       past_key_values=self.past, use_cache=True)
        self.past = o.past_key_values
        return o.logits[:, -1].float()
