"""The preset tokenizer: byte-level BPE trained on an env's text, with the chat template.

Pieces are a letter run, a digit or a punctuation character, each with the space before it
(``" candles"``), and any other whitespace character alone.  So that a word is the same token
in the text and in an action argument, a normaliser writes ``[`` followed by a non-space as
``[ `` (``search[ scented candles]``) and the decoder removes that space again (a space typed
right after ``[`` does not round-trip).  Text is lower-cased first (WebShop and ScienceWorld
read actions case-insensitively).  An env's identifiers (WebShop's ASINs) are added tokens:
``B06Y3VLDFB`` is one token in the observation and in ``click[B06Y3VLDFB]``, so choosing a
listed product is copying one token (docs/tiny-preset.md); an identifier outside the
vocabulary is spelled in pieces, the same after a space and after ``[``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from eef.models.format import DEFAULT_CHAT_TEMPLATE
from eef.presets.base import PresetError

#: special tokens of the preset tokenizers (the chat template's markers, padding)
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]

#: pieces of the pre-tokenizer (see module doc)
PRETOKENIZE_PATTERN = r" ?[a-z]+| ?[0-9]| ?[^\sa-z0-9]|\s"


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
