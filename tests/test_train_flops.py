"""flops_per_example against torch's own FLOP counter on a small Llama: full fine-tuning and
LoRA on all projections and on q/k/v only (frozen weights without weight gradients, the first
block's q/k/v without input gradients), the LM head on trained positions only."""
import pytest
import torch

from eef.models.hparams import TrainConfig
from eef.models.train import MaskedLMLoss, add_lora, flops_per_example


@pytest.mark.parametrize("lora_r", [0, 4])
@pytest.mark.parametrize("targets", ["q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                     "q_proj,k_proj,v_proj"])
def test_counted_flops_match_what_torch_executes(lora_r, targets):
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, intermediate_size=96,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                      attn_implementation="eager")
    model = LlamaForCausalLM(cfg)
    if lora_r:
        model = add_lora(model, TrainConfig(lora_r=lora_r, lora_targets=targets))
    n = 12
    ids = torch.randint(0, 100, (1, n))
    labels = ids.clone()
    labels[0, :5] = -100
    with FlopCounterMode(display=False) as fc:
        loss, trained = MaskedLMLoss(model)(ids, torch.ones_like(ids), labels)
        loss.backward()
    got = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    # eager attention computes the whole n x n square; the count assumes the causal half
    want = flops_per_example(cfg, n, int(trained), lora_r, targets)
    assert got["aten.mm"] + got["aten.bmm"] / 2 == want
