"""DPO (Rafailov et al. 2023) on pairs of trajectories, with the action-token masks of SFT.

``train_dpo(model, pairs, out, TrainConfig(...), beta=0.1)`` fine-tunes an HF causal LM (a
preset, a checkpoint, an SFT model or LoRA adapter of ``eef.models.train``) on ``Pair``\\ s of
(chosen, rejected) trajectories of the same task and writes an HF-format model to ``out``,
loadable as ``hf:out``.

Masks: each side of a pair is encoded exactly as SFT encodes a trajectory
(``ChatFormat.encode_training``: the task prompt and its steps in windows of ``max_tokens``),
so a token counts iff SFT would train it: the text of an assistant turn whose step has
``train=True``, never a prompt, observation or header token.  A side's log-probability
log π(τ) is the sum of the log-probs of its counted tokens over all its windows.

Loss (DPO's sigmoid loss, TRL's default ``loss_type``), averaged over the pairs of a batch::

    -log σ(β [(log π(τ+) - log π_ref(τ+)) - (log π(τ-) - log π_ref(τ-))])

π_ref's log-probs are computed once, before the first step (TRL's ``precompute_ref_logps``):
with the initial model itself (so no second model is kept in memory) or, when ``reference``
names another model, with that one; they are saved in ``out/ref_logps.json``.

Why not TRL's ``DPOTrainer``: it takes one sequence per side (a prompt and a completion, its
loss mask the completion's tokens).  A multi-turn trajectory interleaves the counted assistant
turns with observations, and a long one is several context windows whose log-probs must be added
into one log π(τ): one row per side cannot express that.  The rest (windows, masks, LoRA,
accelerate's mixed precision incl. bf16 on CPU, seeded data order, checkpoints that resume to the
same curve) is ``eef.models.train``'s, shared with SFT; what is left is the one-line loss above.

Batches: ``batch_size`` pairs per optimizer step, split into micro-batches of whole pairs of at
most ``micro_batch_tokens`` padded tokens (a pair's loss needs all its windows), gradients
accumulated: the same update however a batch is split.  Resume as SFT: ``out/checkpoint``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F

from eef.models.format import ChatFormat, Example
from eef.models.hparams import TrainConfig
from eef.models.train import (MaskedLMLoss, TrainError, _load_checkpoint, make_trainable,
                              load_for_training, pad_examples, prepare_steps, run_steps)
from eef.trajectory import Trajectory, dumps_line


@dataclass
class Pair:
    """A preference pair: ``chosen`` is preferred over ``rejected`` (same task)."""

    chosen: Trajectory
    rejected: Trajectory

    @property
    def task_id(self) -> str:
        return self.chosen.task_id

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "chosen": self.chosen.to_dict(),
                "rejected": self.rejected.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Pair":
        if not isinstance(d, dict) or "chosen" not in d or "rejected" not in d:
            raise TrainError("not a preference pair record (needs chosen and rejected)")
        return cls(Trajectory.from_dict(d["chosen"]), Trajectory.from_dict(d["rejected"]))


def write_pairs(path: str | os.PathLike, pairs: Iterable[Pair]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(dumps_line(p.to_dict()))


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(Pair.from_dict(json.loads(line)))
            except (ValueError, TrainError) as e:
                raise TrainError(f"{path}:{i}: {e}") from e
    return out


# -- log-probs and loss -----------------------------------------------------------------------
@dataclass
class EncodedPair:
    chosen: list[Example]  # the windows of each side
    rejected: list[Example]


def encode_pairs(pairs: Sequence[Pair], fmt: ChatFormat, max_tokens: int
                 ) -> tuple[list[EncodedPair], list[int]]:
    """The windows of both sides of every pair, and the indices of the pairs kept: a pair a
    side of which has no counted token (every step ``train=False``, or no turn fits the
    budget) is left out."""
    enc, kept = [], []
    for i, p in enumerate(pairs):
        c, _ = fmt.encode_training(p.chosen, max_tokens)
        r, _ = fmt.encode_training(p.rejected, max_tokens)
        if c and r:
            enc.append(EncodedPair(c, r))
            kept.append(i)
    return enc, kept


class SequenceLogps(MaskedLMLoss):
    """Per row: the sum of the log-probs of its trained tokens (labels != -100)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        ce, sel = self.token_losses(input_ids, attention_mask, labels)
        rows = sel.nonzero()[:, 0]
        return -torch.zeros(len(input_ids), device=ce.device, dtype=ce.dtype).index_add(0, rows, ce)


def side_logps(logps: Any, pairs: Sequence[EncodedPair], pad_id: int, device: Any = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(chosen), log π(rejected)) of ``pairs`` in one padded forward pass of ``logps``
    (a ``SequenceLogps``): the sums over each side's windows."""
    windows: list[Example] = []
    side: list[int] = []  # 2 k: chosen of pair k, 2 k + 1: its rejected
    for k, p in enumerate(pairs):
        for s, exs in enumerate((p.chosen, p.rejected)):
            windows += exs
            side += [2 * k + s] * len(exs)
    ids, att, lab = (t.to(device) for t in pad_examples(windows, pad_id))
    rows = logps(ids, att, lab)
    sums = torch.zeros(2 * len(pairs), device=rows.device, dtype=rows.dtype)
    sums = sums.index_add(0, torch.tensor(side, device=rows.device), rows)
    return sums[0::2], sums[1::2]


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's sigmoid loss of every pair (the log-probs are per pair, summed over its tokens)."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


def pair_groups(pairs: Sequence[EncodedPair], batch: list[int], max_tokens: int) -> list[list[int]]:
    """``batch`` split into runs of whole pairs of at most ``max_tokens`` padded tokens each
    (one pair at least)."""
    groups: list[list[int]] = [[]]
    rows = longest = 0
    for i in batch:
        ws = pairs[i].chosen + pairs[i].rejected
        n, L = rows + len(ws), max(longest, *(len(w.input_ids) for w in ws))
        if groups[-1] and n * L > max_tokens:
            groups.append([])
            n, L = len(ws), max(len(w.input_ids) for w in ws)
        groups[-1].append(i)
        rows, longest = n, L
    return groups


# -- the loop ---------------------------------------------------------------------------------
def _reference_logps(path: Path, key: str, compute) -> tuple[torch.Tensor, torch.Tensor]:
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return torch.tensor(saved["chosen"]), torch.tensor(saved["rejected"])
    c, r = compute()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "chosen": c.tolist(), "rejected": r.tolist()}))
    os.replace(tmp, path)
    return c, r


def train_dpo(model_path: str, pairs: str | os.PathLike | Iterable[Pair],
              out: str | os.PathLike, cfg: TrainConfig | None = None, *, beta: float = 0.1,
              reference: str | None = None, key: str = "", progress: bool = True,
              stop_after: int | None = None) -> dict[str, Any]:
    """DPO of ``model_path`` on ``pairs`` (a JSONL file of ``Pair.to_dict`` or pairs) into
    ``out``; the reference is ``reference`` (a model path) or, by default, ``model_path``.
    ``key`` identifies the inputs beyond the pairs, beta and the paths (e.g. the models'
    contents): reference log-probs in ``out`` made under another key are recomputed, and a
    checkpoint of another key is an error.

    Returns ``{"losses", "accuracies", "margins", "steps", "pairs", "skipped_pairs",
    "seconds"}`` (accuracy: the share of a batch's pairs whose margin is positive).
    ``stop_after`` ends the run after that many steps of this call (tests of resume).
    """
    from eef.models.hf import load_model_and_tokenizer

    cfg = cfg or TrainConfig()
    if not beta > 0:
        raise TrainError(f"DPO beta must be > 0, not {beta}")
    out = Path(out)
    pairs = read_pairs(pairs) if isinstance(pairs, (str, os.PathLike)) else list(pairs)
    if not pairs:
        raise TrainError("no preference pair to train on")
    model, tok, fmt = load_for_training(model_path, cfg)
    enc, kept = encode_pairs(pairs, fmt, cfg.max_tokens)
    if not enc:
        raise TrainError(f"none of the {len(pairs)} pairs has a counted token on both sides "
                         f"(every step train=False, or no turn fits {cfg.max_tokens} tokens)")
    model = make_trainable(model, cfg)
    acc, logps, params, opt, sched, per_epoch, total = prepare_steps(
        SequenceLogps(model), cfg, len(enc))
    pad = int(tok.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)

    def ref_pass(mod: Any) -> tuple[torch.Tensor, torch.Tensor]:
        mod.eval()
        cs, rs = [], []
        with torch.no_grad(), acc.autocast():
            for g in pair_groups(enc, list(range(len(enc))), cfg.micro_batch_tokens):
                c, r = side_logps(mod, [enc[i] for i in g], pad, acc.device)
                cs.append(c.float().cpu())
                rs.append(r.float().cpu())
        mod.train()
        return torch.cat(cs), torch.cat(rs)

    def compute_ref() -> tuple[torch.Tensor, torch.Tensor]:
        if reference is None or str(reference) == str(model_path):
            return ref_pass(acc.unwrap_model(logps))
        ref_model, _ = load_model_and_tokenizer(str(reference))
        try:
            return ref_pass(SequenceLogps(ref_model).to(acc.device))
        finally:
            del ref_model

    data_key = hashlib.sha256(json.dumps(
        [[w.input_ids + w.mask for w in p.chosen + p.rejected] for p in enc]).encode()).hexdigest()
    dpo_key = {"beta": beta, "reference": str(reference or model_path), "data": data_key[:16],
               "key": key}
    ref_c, ref_r = _reference_logps(out / "ref_logps.json", json.dumps(dpo_key, sort_keys=True),
                                    compute_ref)
    ref_c, ref_r = ref_c.to(acc.device), ref_r.to(acc.device)

    ckpt = out / "checkpoint"
    state: dict[str, Any] = {"step": 0, "losses": [], "accuracies": [], "margins": [],
                             "seconds": 0.0, "dpo": dpo_key}
    if (ckpt / "trainer_state.json").exists():
        state = _load_checkpoint(ckpt, acc.unwrap_model(logps).model, opt, sched, cfg)
        if state.get("dpo") != dpo_key:
            raise TrainError(f"{ckpt}: checkpoint of a DPO run on other pairs, beta, reference "
                             "or key; use another output directory")
    rank, world = acc.process_index, acc.num_processes
    if cfg.batch_size < world:
        raise TrainError(f"batch_size {cfg.batch_size} is smaller than the {world} processes")
    if acc.is_main_process:
        (out / "eef_train.json").write_text(json.dumps(
            {"config": asdict(cfg), "method": "dpo", "beta": beta, "base_model": model_path,
             "reference": str(reference or model_path), "pairs": len(enc),
             "skipped_pairs": len(pairs) - len(enc)}, indent=2))

    def dpo_step(epoch: int, k: int) -> dict[str, float]:
        order = list(range(len(enc)))
        random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
        batch = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
        sums = torch.zeros(3, device=acc.device)  # loss, pairs ordered right, margin
        for g in pair_groups(enc, batch[rank::world], cfg.micro_batch_tokens):
            c, r = side_logps(logps, [enc[i] for i in g], pad, acc.device)
            rc, rr = ref_c[g], ref_r[g]
            losses = dpo_loss(c.float(), r.float(), rc, rr, beta)
            # DDP averages gradients over processes, hence the factor world
            acc.backward(losses.sum() * (world / len(batch)))
            margin = ((c - rc) - (r - rr)).detach().float()
            sums += torch.stack([losses.detach().sum(), (margin > 0).float().sum(),
                                 margin.sum()])
        if world > 1:
            sums = acc.reduce(sums, reduction="sum")
        loss, accuracy, margin = (float(x) / len(batch) for x in sums)
        state["losses"].append(loss)
        state["accuracies"].append(accuracy)
        state["margins"].append(margin)
        return {"loss": loss, "accuracy": accuracy, "margin": margin}

    step = run_steps(acc, logps, tok, fmt, opt, sched, params, cfg, out, state, total,
                     per_epoch, dpo_step, desc="dpo", progress=progress, stop_after=stop_after)
    return {"losses": state["losses"], "accuracies": state["accuracies"],
            "margins": state["margins"], "steps": step, "total_steps": total,
            "pairs": len(enc), "skipped_pairs": len(pairs) - len(enc), "kept": kept,
            "seconds": state["seconds"]}
