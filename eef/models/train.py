"""Supervised fine-tuning on trajectories with the action-token loss mask (Eq. 1 of the paper).

``train_sft(model, trajectories, out, TrainConfig(...))`` fine-tunes an HF causal LM (a preset
directory, a checkpoint, a hub model in the local cache) on the trained turns of the
trajectories (``Step.train``; see ``eef.models.format``) and writes an HF-format model to
``out``, loadable as ``hf:out``.  The same code runs full fine-tuning of the tiny preset on CPU
and LoRA (``lora_r > 0``, peft) on large models with ``accelerate launch`` (DDP / DeepSpeed
configs are accelerate's).

Loss: cross-entropy summed over the trained tokens of a batch, divided by their count (a
token-level mean over the whole batch, however it is split into micro-batches).  The LM head is
applied to the trained positions only; the other positions' logits are never needed.

Reproducible: the data order of epoch ``e`` is a permutation seeded by ``seed + e``; the model is
initialised from disk; so the same seed and data give the same loss curve on CPU.  Resume: every
``save_every`` steps the model, optimizer, scheduler and RNG state go to ``out/checkpoint``
(written to a temporary directory, then renamed); a rerun with the same ``out`` continues from
there and reproduces the uninterrupted curve.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from eef.memory import release
from eef.models.format import (DEFAULT_CUT_NOTE, ChatFormat, Example, IdAliases,
                               build_examples, format_options, save_format_options)
from eef.models.hparams import TrainConfig
from eef.trajectory import Trajectory, read_jsonl


class TrainError(ValueError):
    """Bad training input (no data, no trained token, incompatible checkpoint)."""


def resolve_mixed_precision(name: str, n_params: int) -> str:
    """accelerate's ``mixed_precision`` for ``TrainConfig.mixed_precision`` and a model of
    ``n_params`` parameters (``auto``: bf16 where it is fast for it, else no)."""
    if name in ("no", "bf16", "fp16"):
        return name
    if name != "auto":
        raise TrainError(f"mixed_precision must be no, bf16, fp16 or auto, not {name!r}")
    from eef.models.precision import SMALL_MODEL_PARAMS, fast_bf16
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return "bf16" if fast_bf16(dev) and n_params >= SMALL_MODEL_PARAMS else "no"


def model_params(model_path: str) -> int:
    """Parameter count of an HF model directory from its config (no weights loaded)."""
    from transformers import AutoConfig

    from eef.models.named import resolve
    p = Path(resolve(model_path))
    adapter = p / "adapter_config.json"
    if adapter.exists():
        p = Path(json.loads(adapter.read_text()).get("base_model_name_or_path") or p)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(p)))
    return sum(t.numel() for t in m.parameters())


# -- data -------------------------------------------------------------------------------------
def load_trajectories(data: str | os.PathLike | Iterable[Trajectory]) -> list[Trajectory]:
    if isinstance(data, (str, os.PathLike)):
        return read_jsonl(data)
    return list(data)


def epoch_batches(examples: Sequence[Example], batch_size: int, seed: int, epoch: int
                  ) -> list[list[int]]:
    """Batches of example indices for one epoch: a seeded shuffle, then length-sorted within
    windows of 32 batches (less padding), then the batches in a seeded random order."""
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    win = batch_size * 32
    batches = []
    for a in range(0, len(idx), win):
        chunk = sorted(idx[a:a + win], key=lambda i: len(examples[i].input_ids))
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batch_groups(examples: Sequence[Example], batch: list[int], max_tokens: int
                       ) -> list[list[int]]:
    """Split a batch (example indices) into groups of at most ``max_tokens`` padded tokens
    each (one sequence at least), sequences sorted by length."""
    order = sorted(batch, key=lambda i: len(examples[i].input_ids))
    groups: list[list[int]] = [[]]
    for i in order:
        L = len(examples[i].input_ids)
        if groups[-1] and (len(groups[-1]) + 1) * L > max_tokens:
            groups.append([])
        groups[-1].append(i)
    return groups


def micro_batches(examples: Sequence[Example], batch: list[int], max_tokens: int,
                  pad_id: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``micro_batch_groups`` as right-padded (input_ids, attention_mask, labels) tensors."""
    return [pad_examples([examples[i] for i in g], pad_id)
            for g in micro_batch_groups(examples, batch, max_tokens)]


def decision_weights(examples: Sequence[Example], weight: float) -> torch.Tensor:
    """Per-token loss weights of right-padded ``examples``: ``weight`` on each trained turn's
    decision token (``Example.decision``), 1 elsewhere."""
    T = max(len(e.input_ids) for e in examples)
    w = torch.ones((len(examples), T), dtype=torch.float32)
    for r, e in enumerate(examples):
        if e.decision:
            w[r, :len(e.decision)] += (weight - 1.0) * torch.tensor(e.decision,
                                                                  dtype=torch.float32)
    return w


def pad_examples(examples: Sequence[Example], pad_id: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels) of ``examples`` in their order; labels
    are -100 wherever the loss mask is 0."""
    T = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), T), dtype=torch.long)
    lab = torch.full((len(examples), T), -100, dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        ids[r, :n] = torch.tensor(e.input_ids)
        att[r, :n] = 1
        lab[r, :n] = torch.tensor([t if m else -100 for t, m in zip(e.input_ids, e.mask)])
    return ids, att, lab


# -- model ------------------------------------------------------------------------------------
class MaskedLMLoss(torch.nn.Module):
    """Sum of the cross-entropy over trained tokens; the LM head runs on those positions only."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def _parts(self) -> tuple[Any, Any]:
        m = self.model
        causal = m.get_base_model() if hasattr(m, "get_base_model") else m
        return getattr(causal, causal.base_model_prefix), causal.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor, weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the trained tokens' cross-entropy, each times its ``weights`` entry when
        given, same shape as ``labels``; number of trained tokens)."""
        ce, sel = self.token_losses(input_ids, attention_mask, labels)
        if weights is not None:
            ce = ce * weights[:, 1:][sel]
        return ce.sum(), sel.sum()

    def token_losses(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-entropy of every trained token (row-major order) and the boolean
        (rows, length - 1) map of the trained target positions."""
        backbone, head = self._parts()
        # Right padding: under the causal mask no real token can see a pad (pads come last),
        # and pad positions are never in the loss, so the padding mask is not needed; leaving
        # it out lets attention take the plain causal fast path.
        right_padded = bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())
        h = backbone(input_ids=input_ids,
                     attention_mask=None if right_padded else attention_mask).last_hidden_state
        tgt = labels[:, 1:]
        sel = tgt != -100
        logits = head(h[:, :-1][sel]).float()
        return F.cross_entropy(logits, tgt[sel], reduction="none"), sel


def load_for_training(model_path: str, cfg: TrainConfig) -> tuple[Any, Any, ChatFormat]:
    """(model, tokenizer, chat format) to fine-tune ``model_path`` with ``cfg``, after seeding
    torch and ``random`` with ``cfg.seed``; a LoRA adapter directory loads unmerged."""
    from eef.models.hf import load_model_and_tokenizer
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    # LoRA trains float32 adapters over frozen weights: those can be held in bf16 outright
    bf16 = cfg.lora_r > 0 and cfg.mixed_precision in ("bf16", "auto") and \
        resolve_mixed_precision(cfg.mixed_precision, model_params(model_path)) == "bf16"
    model, tok = load_model_and_tokenizer(model_path, merge_lora=False,
                                          dtype="bfloat16" if bf16 else None)
    opts = format_options(model_path)
    if cfg.id_aliases is not None:
        opts["aliases"] = IdAliases() if cfg.id_aliases else None
    if cfg.cut_note is not None:
        opts["cut_note"] = (DEFAULT_CUT_NOTE if cfg.cut_note is True else
                            cfg.cut_note or None)
    return model, tok, ChatFormat(tok, system=cfg.system, **opts)


def add_lora(model: Any, cfg: TrainConfig) -> Any:
    """``model`` with a new LoRA adapter of ``cfg`` (peft), the only trained weights."""
    from peft import LoraConfig, get_peft_model
    return get_peft_model(model, LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=[t.strip() for t in cfg.lora_targets.split(",") if t.strip()],
        task_type="CAUSAL_LM"))


def make_trainable(model: Any, cfg: TrainConfig) -> Any:
    """The model to train: a LoRA adapter loaded as the initial model goes on training (its
    base stays frozen: an iteration that continues from a LoRA model); otherwise a new adapter
    with ``lora_r`` > 0, else full fine-tuning."""
    if hasattr(model, "peft_config"):
        for n, p in model.named_parameters():
            p.requires_grad = "lora_" in n
        return model
    return add_lora(model, cfg) if cfg.lora_r > 0 else model


def make_optimizer(model: Any, cfg: TrainConfig, total: int) -> tuple[list[Any], Any, Any]:
    """(trained parameters, AdamW, lr schedule of ``total`` steps) of ``cfg``."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
                            betas=(0.9, 0.95))
    return params, opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))


def prepare_steps(module: torch.nn.Module, cfg: TrainConfig, n: int) -> tuple[Any, ...]:
    """(accelerator, ``module`` prepared, trained parameters, optimizer, lr schedule, steps per
    epoch, total steps) to train ``module.model`` on ``n`` items in batches of ``batch_size``
    (accelerate's ``mixed_precision``; several processes under ``accelerate launch``)."""
    from accelerate import Accelerator
    acc = Accelerator(mixed_precision=resolve_mixed_precision(
        cfg.mixed_precision, sum(p.numel() for p in module.model.parameters())))
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    params, opt, sched = make_optimizer(module.model, cfg, total)
    module, opt = acc.prepare(module, opt)
    return acc, module, params, opt, sched, per_epoch, total


def _lr_lambda(cfg: TrainConfig, total: int):
    warm = max(1, int(cfg.warmup_ratio * total)) if cfg.warmup_ratio > 0 else 0

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        p = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def flops_per_example(cfg: Any, n_tokens: int, n_trained: int, lora_r: int = 0,
                      lora_targets: str = "") -> float:
    """Training FLOPs (forward + backward) of one sequence: 6 x the parameters a token goes
    through (blocks; the LM head only at trained positions) + causal attention.

    With LoRA (``lora_r`` > 0) the frozen weights get no gradient: their matmuls count 2
    (forward) + 2 (the gradient of their input), except the first block's q/k/v projections,
    whose input (the frozen embedding, normed) needs no gradient; every adapted projection
    (``lora_targets``) adds its rank-r factors at 6 x their parameters (the first block's
    q/k/v factors at 4 + 2 x the B factor).  Exact (tests/test_train_flops.py) when q, k and v
    are all adapted, as by default; without one of them block 0's attention backward does
    less than counted."""
    d, L, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    hd = d // cfg.num_attention_heads
    dims = {"q_proj": (d, d), "k_proj": (d, kv * hd), "v_proj": (d, kv * hd), "o_proj": (d, d),
            "gate_proj": (d, inter), "up_proj": (d, inter), "down_proj": (inter, d)}
    per_block = sum(i * o for i, o in dims.values())
    attn = L * 2 * n_tokens * n_tokens * d  # QK^T and AV, causal half, forward
    head = n_trained * d * cfg.vocab_size
    if lora_r <= 0:
        return 6 * n_tokens * L * per_block + 6 * head + 3 * attn
    first = ("q_proj", "k_proj", "v_proj")  # their input has no gradient in block 0
    targets = {t.strip() for t in lora_targets.split(",")} & set(dims)
    frozen = 4 * L * per_block - 2 * sum(i * o for n, (i, o) in dims.items() if n in first)
    adapters = 6 * L * sum(lora_r * (dims[n][0] + dims[n][1]) for n in targets) \
        - 2 * sum(lora_r * dims[n][0] for n in targets if n in first)
    return n_tokens * (frozen + adapters) + 4 * head + 3 * attn


# -- the loop ---------------------------------------------------------------------------------
def train_sft(model_path: str, data: str | os.PathLike | Iterable[Trajectory],
              out: str | os.PathLike, cfg: TrainConfig | None = None, *,
              progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Fine-tune ``model_path`` on ``data`` (a JSONL file or trajectories) into ``out``.

    Returns ``{"losses": [...], "steps", "tokens", "trained_tokens", "seconds", "report"}``.
    ``stop_after`` ends the run after that many steps of this call (tests of resume).
    """
    cfg = cfg or TrainConfig()
    try:
        cfg.check()
    except ValueError as e:
        raise TrainError(str(e)) from None
    out = Path(out)
    trajs = load_trajectories(data)
    if not trajs:
        raise TrainError("empty dataset: no trajectory to train on")
    model, tok, fmt = load_for_training(model_path, cfg)
    examples, report = build_examples(trajs, fmt, cfg.max_tokens)
    model = make_trainable(model, cfg)
    model.train()
    acc, loss_mod, params, opt, sched, per_epoch, total = prepare_steps(
        MaskedLMLoss(model), cfg, len(examples))

    ckpt = out / "checkpoint"
    state = {"step": 0, "losses": [], "tokens": 0, "trained_tokens": 0, "seconds": 0.0}
    if (ckpt / "trainer_state.json").exists():
        state = _load_checkpoint(ckpt, acc.unwrap_model(loss_mod).model, opt, sched, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if acc.is_main_process:
        (out / "eef_train.json").write_text(json.dumps(
            {"config": asdict(cfg), "base_model": model_path, "examples": len(examples),
             "trajectories": len(trajs), "cut_report": asdict(report)}, indent=2))

    pad = int(tok.pad_token_id)
    rank, world = acc.process_index, acc.num_processes
    if cfg.batch_size < world:
        raise TrainError(f"batch_size {cfg.batch_size} is smaller than the {world} processes")

    def sft_step(epoch: int, k: int) -> dict[str, float]:
        batch = epoch_batches(examples, cfg.batch_size, cfg.seed, epoch)[k]
        # several processes (accelerate launch): each takes every world-th sequence; DDP
        # averages gradients over processes, hence the factor world on the loss
        local = batch[rank::world]
        groups = micro_batch_groups(examples, local, cfg.micro_batch_tokens) if local else []
        n_trained = sum(examples[i].n_trained for i in batch)
        total_loss = torch.zeros((), device=acc.device)
        for g in groups:
            exs = [examples[i] for i in g]
            ids, att, lab = (t.to(acc.device) for t in pad_examples(exs, pad))
            wts = (decision_weights(exs, cfg.decision_weight).to(acc.device)
                   if cfg.decision_weight != 1.0 else None)
            loss_sum, _ = loss_mod(ids, att, lab, wts)
            acc.backward(loss_sum * (world / n_trained))
            total_loss += loss_sum.detach()
        if world > 1:
            total_loss = acc.reduce(total_loss, reduction="sum")
        loss = float(total_loss) / n_trained
        state["losses"].append(loss)
        state["tokens"] += sum(len(examples[i].input_ids) for i in batch)
        state["trained_tokens"] += n_trained
        return {"loss": loss}

    step = run_steps(acc, loss_mod, tok, fmt, opt, sched, params, cfg, out, state, total,
                     per_epoch, sft_step, desc="sft", progress=progress, stop_after=stop_after)
    res = {"losses": state["losses"], "steps": step, "total_steps": total,
           "tokens": state["tokens"], "trained_tokens": state["trained_tokens"],
           "seconds": state["seconds"], "examples": len(examples), "report": asdict(report)}
    if step >= total and cfg.decision_probe > 0 and acc.is_main_process:
        res["decisions"] = probe_decisions(out, trajs[:cfg.decision_probe], cfg)
    return res


def probe_decisions(out: Path, trajs: Sequence[Trajectory], cfg: TrainConfig
                    ) -> dict[str, Any]:
    """The decision probe of the model just saved in ``out`` (``eef.models.decisions``):
    written to ``out/decisions.json``, returned without its per-word rows.  A probe that
    fails (a chat format whose turns it cannot split) is a warning and ``{"error": ...}``:
    it never undoes a finished training."""
    from eef.models.decisions import probe_model
    try:
        fig = probe_model(out, trajs, max_context=cfg.max_tokens, system=cfg.system)
    except (ValueError, RuntimeError) as e:
        warnings.warn(f"{out}: decision probe failed ({e}); the model is saved", stacklevel=2)
        return {"error": str(e)}
    (out / "decisions.json").write_text(json.dumps(fig, indent=2))
    return {k: v for k, v in fig.items() if k != "by_word"}


def run_steps(acc: Any, module: Any, tok: Any, fmt: ChatFormat, opt: Any, sched: Any,
              params: list[Any], cfg: TrainConfig, out: Path, state: dict[str, Any], total: int,
              per_epoch: int, step_fn: Any, *, desc: str, progress: bool,
              stop_after: int | None) -> int:
    """The optimizer loop of SFT and DPO, from step ``state["step"]`` to ``total``.

    ``step_fn(epoch, k)`` accumulates the gradients of batch ``k`` of ``epoch`` (and its own
    records in ``state``) and returns the values to log, ``loss`` first; this loop clips the
    gradients, steps the optimizer and the lr schedule, appends to ``out/train_log.jsonl``,
    gives freed heap memory back every ``trim_every`` steps, checkpoints every ``save_every``
    steps (``out/checkpoint``: model, optimizer, scheduler, RNG and ``state``) and at the end
    writes the model to ``out`` (or, stopped early by ``stop_after``, a checkpoint).  Returns
    the step reached."""
    from eef.progress import tqdm
    main = acc.is_main_process
    ckpt = out / "checkpoint"
    log_f = open(out / "train_log.jsonl", "a", encoding="utf-8")
    bar = tqdm(total=total, initial=state["step"], disable=not progress or not main,
               desc=desc, unit="step")
    step, ran = state["step"], 0
    t0 = time.time()
    try:
        while step < total:
            epoch, k = divmod(step, per_epoch)
            logged = step_fn(epoch, k)
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            ran += 1
            if main and (step % cfg.log_every == 0 or step == total):
                log_f.write(json.dumps({"step": step, "epoch": epoch, **logged,
                                        "lr": sched.get_last_lr()[0]}) + "\n")
                log_f.flush()
            bar.set_postfix(loss=f"{logged['loss']:.4f}", epoch=epoch)
            bar.update(1)
            if cfg.trim_every > 0 and step % cfg.trim_every == 0:
                release()
            if step % cfg.save_every == 0 and step < total:
                state["step"] = step
                state["seconds"] += time.time() - t0
                t0 = time.time()
                if main:
                    _save_checkpoint(ckpt, acc.unwrap_model(module).model, tok, opt, sched,
                                     state, cfg)
                acc.wait_for_everyone()
            if stop_after is not None and ran >= stop_after:
                break
    finally:
        bar.close()
        log_f.close()
    state["step"] = step
    state["seconds"] += time.time() - t0
    model = acc.unwrap_model(module).model
    if main and step >= total:
        model.save_pretrained(out)
        tok.save_pretrained(out)
        save_format_options(out, fmt.aliases, fmt.cut_note)  # its data's format, for good
        shutil.rmtree(ckpt, ignore_errors=True)
    elif main:
        _save_checkpoint(ckpt, model, tok, opt, sched, state, cfg)
    acc.wait_for_everyone()
    return step


def _save_checkpoint(ckpt: Path, model: Any, tok: Any, opt: Any, sched: Any,
                     state: dict[str, Any], cfg: TrainConfig) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "py_rng": random.getstate()},
               tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({**state, "config": cfg.key()}))
    old = ckpt.with_name(ckpt.name + ".old")
    if ckpt.exists():
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(ckpt: Path, model: Any, opt: Any, sched: Any, cfg: TrainConfig
                     ) -> dict[str, Any]:
    from safetensors.torch import load_file
    state = json.loads((ckpt / "trainer_state.json").read_text())
    saved = state.pop("config", {})
    now = json.loads(json.dumps(cfg.key()))
    if saved and saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise TrainError(f"{ckpt}: checkpoint of a run with a different config ({', '.join(diff)}"
                         "); use another output directory or the same config")
    weights = ckpt / ("adapter_model.safetensors" if hasattr(model, "peft_config")
                      else "model.safetensors")
    sd = load_file(str(weights))
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(model, sd)
    else:
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or [m for m in missing if "lm_head" not in m]:
            raise TrainError(f"{ckpt}: checkpoint does not match the model")
    extra = torch.load(ckpt / "optimizer.pt", weights_only=False)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["torch_rng"])
    random.setstate(extra["py_rng"])
    return state
