"""Preset sizes and a freshly initialised preset model: ``init_preset("tiny", "webshop", out)``.

It writes an HF model directory (``config.json``, ``model.safetensors``, the tokenizer files
with the chat template, and ``eef_preset.json`` saying what the tokenizer saw) that loads
through ``hf:DIR`` like any model.  The weights are randomly initialised (seeded);
pre-training on env text is ``eef.presets.build``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from eef.presets.base import PresetError
from eef.presets.curricula import CURRICULA
from eef.presets.tokenizer import train_tokenizer

#: the file a preset directory records what it is in (written last by a build)
INFO_FILE = "eef_preset.json"


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
    (``CURRICULA[env].texts``).  Returns the output directory.
    """
    import torch
    from transformers import LlamaForCausalLM

    p = get_preset(preset)
    given = texts is not None
    cur = CURRICULA.get(env or "")
    if texts is None:
        if cur is None:
            raise PresetError(f"no text corpus for env {env!r}; known: {', '.join(CURRICULA)} "
                              "(or pass texts=)")
        texts = cur.texts(data_dir)
    corpus_info: dict[str, int] = {"texts": 0, "chars": 0}

    def counting(ts: Iterable[str]) -> Iterator[str]:
        for t in ts:
            corpus_info["texts"] += 1
            corpus_info["chars"] += len(t)
            yield t

    ids = cur.identifiers(data_dir) if cur and cur.identifiers and not given else []
    tok = train_tokenizer(counting(texts), p.vocab_size, list(cur.extra_tokens) if cur else [],
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
                "texts given by the caller" if given else cur.texts_what)},
            "identifier_tokens": len(ids),
            "weights": "random initialisation (no pre-training)"}
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return out
