"""Rollouts and evaluations through an OpenAI-compatible server that loads LoRA adapters at run
time (vLLM's ``/v1/load_lora_adapter`` API), tested for real with ``eef serve`` on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from eef.models.serve import ServeConfig, create_app
from eef.policy import Sampling, load_policy
from test_models_hf import fixed_task, model_dir  # noqa: F401  (fixtures)
from test_models_util import TINY

pytestmark = pytest.mark.slow  # a model server and pipeline runs in subprocesses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``eef serve``'s app for ``base`` with adapter loading, in a thread."""

    def __init__(self, base: Path, max_adapters: int = 2):
        import uvicorn
        self.policy = load_policy(f"hf:{base}")
        self.port = _free_port()
        self.app = create_app(self.policy, ServeConfig(port=self.port, max_adapters=max_adapters,
                                                       model_name="base"),
                              loader=lambda p: load_policy(f"hf:{p}"))
        self.srv = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                 log_level="error"))
        self.th = threading.Thread(target=self.srv.run, daemon=True)
        self.th.start()
        for _ in range(200):
            if self.srv.started:
                break
            time.sleep(0.05)
        assert self.srv.started
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.srv.should_exit = True
        self.th.join(timeout=10)


@pytest.fixture(scope="module")
def lora_dirs(model_dir, tmp_path_factory):  # noqa: F811
    from eef.models.hparams import TrainConfig
    from eef.models.train import train_sft
    root = tmp_path_factory.mktemp("lora")
    for name, steps in (("a", 20), ("b", 2)):
        train_sft(str(model_dir), fixed_task(32), root / name,
                  TrainConfig(lr=2e-2, max_steps=steps, batch_size=8, lora_r=4, seed=1),
                  progress=False)
    return root / "a", root / "b"


def test_adapters_load_answer_and_unload(model_dir, lora_dirs):  # noqa: F811
    from eef.models.served import adapter_name, release, served_policy
    a, b = lora_dirs
    srv = _Server(model_dir, max_adapters=1)
    try:
        ctx = [t.prefix(0) for t in fixed_task(3)]
        s = Sampling(0.0, 1.0, 24)
        pol = served_policy(srv.url, a, base_dir=model_dir)
        assert pol.model == adapter_name(a) and pol.model in _models(srv)
        want = load_policy(f"hf:{a}").act(ctx, s)
        assert pol.act(ctx, s) == want
        assert want != srv.policy.act(ctx, s)  # the adapter answers, not the base model
        # the base model under its listed name
        base = served_policy(srv.url, model_dir, base_dir=model_dir)
        assert base.model == "base" and base.act(ctx, s) == srv.policy.act(ctx, s)
        # loading the same adapter again is a no-op; a second one exceeds max_adapters
        assert served_policy(srv.url, a, base_dir=model_dir).model == pol.model
        with pytest.raises(Exception, match="max_adapters"):
            served_policy(srv.url, b, base_dir=model_dir)
        release(pol)
        assert pol.model not in _models(srv)
        pb = served_policy(srv.url, b, base_dir=model_dir)  # room again
        assert pb.act(ctx, s) == load_policy(f"hf:{b}").act(ctx, s)
        release(pb)
        # bad requests get clear 4xx answers
        c = httpx.Client()
        r = c.post(f"{srv.url}/load_lora_adapter", json={"lora_name": "x", "lora_path": str(model_dir)})
        assert r.status_code == 400 and "adapter_config.json" in r.text
        r = c.post(f"{srv.url}/load_lora_adapter", json={"lora_name": "x"})
        assert r.status_code == 400 and "lora_path" in r.text
        r = c.post(f"{srv.url}/load_lora_adapter", content=b"[1]")
        assert r.status_code == 400
        r = c.post(f"{srv.url}/unload_lora_adapter", json={"lora_name": "nope"})
        assert r.status_code == 404 and "nope" in r.text
        assert srv.app.state.adapter_loads == [adapter_name(a), adapter_name(b)]
    finally:
        srv.stop()


def test_full_weights_cannot_be_served(model_dir, tmp_path):  # noqa: F811
    from eef.models.served import ServedModelError, served_policy
    with pytest.raises(ServedModelError, match="LoRA"):
        served_policy("http://127.0.0.1:9/v1", model_dir, base_dir=tmp_path)


def _models(srv: _Server) -> list[str]:
    return [m["id"] for m in httpx.get(f"{srv.url}/models").json()["data"]]


SMALL = ["model.base=preset:test", "model.pretrain=false", "env.train_tasks=8", "env.eval_tasks=3",
         "env.options={max_steps: 4}", "method.iterations=1", "method.M=1", "train.epochs=1",
         "train.max_tokens=384", "train.batch_size=4", "train.lora_r=4", "train.lr=0.01",
         "sampling.max_new_tokens=12", "rollout.num_envs=4", "rollout.progress=false"]


def _run(out: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    args = ["run", TINY, "--out", str(out)] + [x for s in [*SMALL, *extra] for x in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "eef.cli", *args], capture_output=True,
                          text=True, timeout=900)


def _rollouts(run: Path) -> dict[str, list]:
    out = {}
    for f in sorted((run / "rollouts").rglob("*.jsonl")):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        out[str(f.relative_to(run))] = sorted(
            (r["task_id"], [s["action"] for s in r["steps"]], r["reward"]) for r in rows)
    return out


@pytest.mark.needs_data
def test_pipeline_through_a_server_matches_in_process(tmp_path):
    """The same LoRA run with rollouts in-process and through the server: the same episodes."""
    from eef.algorithms.rundir import digest
    from eef.paths import cache_dir
    r = _run(tmp_path / "local")
    assert r.returncode == 0, r.stderr[-3000:]
    base = cache_dir() / "presets" / f"test-webshop-init-{digest({})}"
    assert (base / "config.json").exists()
    srv, srv2 = _Server(base, max_adapters=2), _Server(base, max_adapters=2)
    try:
        r = _run(tmp_path / "served", [f"model.serve_url={srv.url}"])
        assert r.returncode == 0, r.stderr[-3000:]
        loads = list(srv.app.state.adapter_loads)
        assert loads and not srv.app.state.adapters  # every adapter was released after use
        # two replicas of the server (eef.rollout.replicas): every batch split over both
        r = _run(tmp_path / "replicas", [f"model.serve_url={srv.url}",
                                         f"model.serve_urls=[{srv2.url}]"])
        assert r.returncode == 0, r.stderr[-3000:]
        assert srv2.app.state.adapter_loads == srv.app.state.adapter_loads[len(loads):]
        assert srv2.app.state.adapter_loads and not srv2.app.state.adapters
        assert srv2.app.state.chat_requests > 0
    finally:
        srv.stop()
        srv2.stop()
    local, served = _rollouts(tmp_path / "local"), _rollouts(tmp_path / "served")
    assert set(local) == set(served) and any(local.values())
    assert local == served == _rollouts(tmp_path / "replicas")


def test_serve_url_needs_lora():
    from eef.algorithms.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="lora_r"):
        load_config(TINY, ["model.serve_url=http://127.0.0.1:8000/v1"])
    load_config(TINY, ["model.serve_url=http://127.0.0.1:8000/v1", "train.lora_r=8"])
    with pytest.raises(ConfigError, match="serve_urls"):
        load_config(TINY, ["model.serve_urls=[http://127.0.0.1:8001/v1]", "train.lora_r=8"])
