"""Model presets: a small Llama-style config plus a BPE tokenizer trained on the env's text.

``init_preset("tiny", "webshop", out)`` writes an HF model directory (``config.json``,
``model.safetensors``, tokenizer files with the chat template, ``eef_preset.json`` saying what
the tokenizer saw) that loads through ``hf:DIR`` like any model.  The weights are randomly
initialised (seeded); pre-training on environment text is a separate step.

Tokenizer.  Byte-level BPE whose pieces are a letter run, a digit or a punctuation character,
each with the space before it (``" candles"``), and any other whitespace character alone.  So
that a word is the same token in the text and in an action argument, a normaliser writes
``[`` followed by a non-space as ``[ `` (``search[ scented candles]``: `` scented`` as in the
instruction) and the decoder removes that space again (the one thing that does not round-trip
is a space typed right after ``[``).  Text is lower-cased first: an instruction's
``wireless`` and a title's ``Wireless`` are one token, which a tiny model would otherwise have
to learn are the same (WebShop and ScienceWorld read actions case-insensitively; the model's
own text comes out lower-case, identifiers excepted).  The env's **identifiers** (WebShop:
the catalogue's ASINs) are added tokens: ``B06Y3VLDFB`` is ONE token in the observation and
in ``click[B06Y3VLDFB]``, so choosing a listed product is copying one token, not spelling ten
characters (a from-scratch model given one-character pieces did not learn to copy them
within a CPU budget: see ``docs/tiny-preset.md``).  An identifier outside the vocabulary (a
product added later) is spelled in pieces, the same after a space and after ``[``.  This
also removes the mismatch measured with a plain
byte-level BPE, which tokenised the same ASIN differently after a space and after ``[``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from eef.models.format import DEFAULT_CHAT_TEMPLATE

#: special tokens of the preset tokenizers (the chat template's markers, padding)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

#: pieces of the pre-tokenizer (see module doc)
PRETOKENIZE_PATTERN = r" ?[a-z]+| ?[0-9]| ?[^\sa-z0-9]|\s"


class PresetError(ValueError):
    """Unknown preset or env, or an unusable corpus."""


@dataclass(frozen=True)
class Preset:
    """Size of a preset model (Llama architecture)."""

    hidden_size: int = field(metadata={"help": "model width d"})
    num_hidden_layers: int = field(metadata={"help": "transformer blocks"})
    num_attention_heads: int = field(metadata={"help": "attention heads (head dim = d / heads)"})
    intermediate_size: int = field(metadata={"help": "SwiGLU MLP width"})
    vocab_size: int = field(metadata={"help": "BPE vocabulary size (incl. special tokens and "
                                                "markers; identifier tokens come on top)"})
    max_position_embeddings: int = field(default=2048, metadata={"help": "longest context (RoPE)"})
    help: str = ""


PRESETS: dict[str, Preset] = {
    # ~4.3M parameters: 1.05M embedding (tied with the LM head) + 4 x 0.8M blocks
    "tiny": Preset(256, 4, 4, 688, 4096, help="4 layers, d=256: trains on 2 CPU cores"),
    # ~29M parameters
    "small": Preset(512, 8, 8, 1376, 8192, help="8 layers, d=512: a GPU or patient CPU"),
    # for unit tests only: a few hundred thousand parameters
    "test": Preset(64, 2, 2, 172, 512, max_position_embeddings=1024, help="unit tests"),
}


# -- tokenizer --------------------------------------------------------------------------------
def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096,
                    extra_tokens: Iterable[str] = (), min_frequency: int = 2,
                    identifiers: Iterable[str] = ()) -> Any:
    """Train the preset tokenizer on ``texts`` (any iterable of strings: env observations,
    instructions, actions) and return a ``PreTrainedTokenizerFast`` with the chat template.

    ``extra_tokens`` (markers such as ``[SEP]``) count towards ``vocab_size``;
    ``identifiers`` become one added token each, on top of it."""
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            trainers)
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(),
                                           normalizers.Replace(Regex(r"\[(?=\S)"), "[ ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("[ ", "[")])
    extra = [t for t in extra_tokens if t not in SPECIAL_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(extra), min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    n = [0]

    def counted() -> Iterator[str]:
        for t in texts:
            if t:
                n[0] += 1
                yield t

    tok.train_from_iterator(counted(), trainer=trainer)
    if n[0] == 0:
        raise PresetError("cannot train a tokenizer on an empty corpus")
    ids = [t for t in dict.fromkeys(identifiers) if t and t not in extra]
    if extra or ids:  # markers such as "[SEP]" and identifiers become single tokens
        from tokenizers import AddedToken
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in extra + ids])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>",
        chat_template=DEFAULT_CHAT_TEMPLATE, padding_side="left",
        model_max_length=1 << 30)  # the context length is the model's (config.json)


# -- env corpora ------------------------------------------------------------------------------
def webshop_corpus(data_dir: str | os.PathLike | None = None) -> Iterator[str]:
    """Text of the WebShop catalogue (titles, descriptions, bullet points, options, prices,
    ASINs, search text) and the action vocabulary.  No goal, instruction or trajectory: test
    products' instructions never reach the tokenizer."""
    from eef.config import DataNotFoundError, data_dir as _dd
    path = Path(_dd(data_dir)) / "webshop" / "products_1k.jsonl"
    if not path.exists():
        raise DataNotFoundError(f"{path} not found: get the WebShop data first (eef data "
                                "download webshop) or set EEF_DATA_DIR")
    # the env's fixed interface words, repeated so that each is a token of its own
    for _ in range(200):
        yield ("Instruction: [SEP] WebShop [SEP] Search Back to Search < Prev Next > "
               "Description Features Reviews Buy Now search[ click[ ] Thought: Action: "
               "Observation: Page 1 (Total results: 50) Your score (min 0.0, max 1.0) "
               "i need i want i am looking for find me with and price lower than dollars")
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            p = d.get("product") or {}
            yield f"{d['id']} [SEP] {p.get('Title') or p.get('name', '')} [SEP] {p.get('Price', '')}"
            yield d.get("contents", "")
            yield str(p.get("Description", ""))
            for b in p.get("BulletPoints") or []:
                yield str(b)
            for name, values in (p.get("options") or {}).items():
                yield f"{name} [SEP] " + " [SEP] ".join(map(str, values))
                yield " ".join(f"click[{v}]" for v in values)
            yield f"click[{d['id']}] click[{str(d['id']).lower()}]"


#: text corpora of the tokenizer by env; other envs pass ``texts=`` to ``init_preset``
def sciworld_corpus(data_dir: str | os.PathLike | None = None) -> Iterator[str]:
    """ScienceWorld text of train variations only (``eef.models.pretrain_sciworld``)."""
    from eef.models.pretrain_sciworld import sciworld_texts
    return sciworld_texts(data_dir)


CORPORA: dict[str, Callable[..., Iterable[str]]] = {
    "webshop": webshop_corpus,
    "sciworld": sciworld_corpus,
}
EXTRA_TOKENS: dict[str, list[str]] = {"webshop": ["[SEP]"]}
#: what each env's tokenizer corpus holds (recorded in ``eef_preset.json``)
CORPUS_WHAT = {
    "webshop": "webshop catalogue text and the action vocabulary only (no instructions, expert "
               "or test trajectories)",
    "sciworld": "sciworld action templates and text of train variations only (task "
                "descriptions, rooms, object names, random actions; no dev/test variation, no "
                "expert)",
}


def webshop_identifiers(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The catalogue's ASINs (upper case, as pages show them), sorted: added tokens."""
    from eef.config import data_dir as _dd
    path = Path(_dd(data_dir)) / "webshop" / "products_1k.jsonl"
    with open(path, encoding="utf-8") as f:
        return sorted({str(json.loads(line)["id"]).upper() for line in f if line.strip()})


#: identifier tokens by env (one added token each; see the module doc)
IDENTIFIERS: dict[str, Callable[..., list[str]]] = {"webshop": webshop_identifiers}


# -- model ------------------------------------------------------------------------------------
def preset_config(preset: str | Preset, tokenizer: Any) -> Any:
    """The ``LlamaConfig`` of a preset for ``tokenizer``."""
    from transformers import LlamaConfig
    p = get_preset(preset) if isinstance(preset, str) else preset
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=p.hidden_size,
        num_hidden_layers=p.num_hidden_layers, num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_attention_heads, intermediate_size=p.intermediate_size,
        max_position_embeddings=p.max_position_embeddings, tie_word_embeddings=True,
        rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.02,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise PresetError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def init_preset(preset: str, env: str | None, out: str | os.PathLike, *,
                texts: Iterable[str] | None = None, seed: int = 0,
                data_dir: str | os.PathLike | None = None) -> Path:
    """Write a freshly initialised preset model + tokenizer to ``out`` (HF format).

    The tokenizer is trained on ``texts`` when given, else on the env's corpus
    (``CORPORA[env]``).  Returns the output directory.
    """
    import torch
    from transformers import LlamaForCausalLM

    p = get_preset(preset)
    given = texts is not None
    if texts is None:
        if env not in CORPORA:
            raise PresetError(f"no text corpus for env {env!r}; known: {', '.join(CORPORA)} "
                              "(or pass texts=)")
        texts = CORPORA[env](data_dir)
    corpus_info: dict[str, int] = {"texts": 0, "chars": 0}

    def counting(ts: Iterable[str]) -> Iterator[str]:
        for t in ts:
            corpus_info["texts"] += 1
            corpus_info["chars"] += len(t)
            yield t

    ids = IDENTIFIERS[env](data_dir) if env in IDENTIFIERS and not given else []
    tok = train_tokenizer(counting(texts), p.vocab_size, EXTRA_TOKENS.get(env or "", []),
                          identifiers=ids)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(preset_config(p, tok))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {"preset": preset, "env": env, "seed": seed, "size": asdict(p),
            "parameters": sum(t.numel() for t in model.parameters()),
            "tokenizer_corpus": {**corpus_info, "what": (
                "texts given by the caller" if given else CORPUS_WHAT.get(env, env))},
            "identifier_tokens": len(ids),
            "weights": "random initialisation (no pre-training)"}
    (out / "eef_preset.json").write_text(json.dumps(info, indent=2))
    return out
