"""Offline builders shared by the model-layer tests: tokenizers in the styles of real model
families (trained on a few sentences, no download), synthetic trajectories, a tiny model."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

from eef.trajectory import Step, Trajectory

#: the tiny-preset WebShop config (the from-scratch baseline): the base config of the tests
#: that run the pipeline, whatever the embedded default is
TINY = str(Path(__file__).resolve().parents[1] / "configs" / "webshop-tiny.yaml")

WORDS = ("red blue green black white shoes shirt dress size large small medium cotton men women "
         "price search click buy now next back results page item options color").split()
ASINS = ["B06Y3VLDFB", "B01HQTWL6S", "B07XJ8C8F5", "B09QKP7XQM"]

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
          "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}"
          "{% set sys = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
          "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}"
          "{% endif %}{% for m in msgs %}{% if m['role'] == 'user' %}"
          "{{ bos_token + '[INST] ' + (sys if loop.first else '') + m['content'] | trim + ' [/INST]' }}"
          "{% else %}{{ ' ' + m['content'] | trim + ' ' + eos_token }}{% endif %}{% endfor %}")


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ws = [rng.choice(WORDS + ASINS) for _ in range(rng.randint(8, 30))]
        out.append(" ".join(ws) + f" [SEP] click[{rng.choice(ASINS)}] search[{rng.choice(WORDS)}]")
    out.append("Thought: Action: Observation: Task: Instruction: [SEP]\n")
    out.append(string.printable)
    return out


def make_tokenizer(kind: str):
    """A fast HF tokenizer: ``tiny`` (the preset's), ``gpt2`` (byte-level BPE, no chat
    template), ``chatml``, ``llama3`` (byte-level + special tokens), ``llama2`` (Metaspace)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "tiny":
        from eef.presets import train_tokenizer
        return train_tokenizer(corpus(), 600, ["[SEP]"], identifiers=ASINS[:2])
    if kind == "smollm2":  # the real SmolLM2-135M-Instruct tokenizer and chat template
        from transformers import AutoTokenizer

        from eef.models.named import resolve
        return AutoTokenizer.from_pretrained(resolve("smollm2-135m-instruct", progress=False))
    if kind == "llama2":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        specials = ["<unk>", "<s>", "</s>"]
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = {"gpt2": ["<|endoftext|>"], "chatml": ["<|endoftext|>", "<|im_start|>",
                                                          "<|im_end|>"],
                    "llama3": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                               "<|eot_id|>"]}[kind]
    alphabet = pre_tokenizers.ByteLevel.alphabet() if kind != "llama2" else []
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=700, special_tokens=specials, initial_alphabet=alphabet, show_progress=False))
    kw = {"gpt2": dict(eos_token="<|endoftext|>"),
          "chatml": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML),
          "llama3": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                         chat_template=LLAMA3),
          "llama2": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                         chat_template=LLAMA2)}[kind]
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def make_traj(n_steps: int = 3, untrained: tuple[int, ...] = (1,), obs_words: int = 12,
              seed: int = 0, task_id: str = "t0") -> Trajectory:
    rng = random.Random(seed)
    steps = []
    for i in range(n_steps):
        a = rng.choice(ASINS)
        obs = " [SEP] ".join([a] + [rng.choice(WORDS) for _ in range(obs_words)])
        thought = "" if i % 2 else f"I look for {rng.choice(WORDS)} step {i}"
        steps.append(Step(f"click[{a}]", obs, thought, train=i not in untrained))
    return Trajectory(task_id, "toy", "find red shoes",
                      "Instruction: [SEP] find red shoes [SEP] Search", steps, 1.0, True, True)


def copy_task(n: int, seed: int = 0) -> list[Trajectory]:
    """A learnable toy task: buy the colour named in the instruction."""
    rng = random.Random(seed)
    colors = "red blue green black white pink".split()
    out = []
    for i in range(n):
        c = rng.choice(colors)
        out.append(Trajectory(
            f"t{i}", "toy", f"buy {c} shoes", f"Instruction: [SEP] buy {c} shoes [SEP] Search",
            [Step(f"search[{c} shoes]", "results [SEP] A1 [SEP] B2", ""),
             Step(f"click[{c}]", "done", "")], 1.0, True, True))
    return out


def cached_dir(name: str, build) -> Path:
    """A directory built once per version of the model code (under the eef cache dir), so the
    test modules share one preset and one trained model."""
    import hashlib
    import shutil

    import eef.models
    from eef.paths import cache_dir
    h = hashlib.sha256()
    for f in sorted(Path(eef.models.__file__).parent.glob("*.py")) + [Path(__file__)]:
        h.update(f.read_bytes())
    out = cache_dir() / "test-models" / f"{name}-{h.hexdigest()[:12]}"
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def tiny_model_dir(path: Path, texts: list[str] | None = None, seed: int = 0) -> Path:
    from eef.presets import init_preset
    if not (path / "config.json").exists():
        texts = texts or corpus() + [t.initial_observation + " " + " ".join(
            s.turn + " " + s.observation for s in t.steps) for t in copy_task(50)]
        init_preset("test", None, path, texts=texts, seed=seed)
    return path
