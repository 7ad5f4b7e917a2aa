"""SFT (behaviour cloning): fine-tune the base model on the expert's successful trajectories
with the action-masked loss of Eq. 1.  This is also iteration 0 of RFT, RFT×N, EEF and ETO.
A model brought by the user (``method.sft_model``) can stand in for the training.
SFT-all: the same on every expert trajectory, failures included."""

from __future__ import annotations

from pathlib import Path

from eef.algorithms.config import sft_model_dir
from eef.algorithms.context import Context
from eef.algorithms.rundir import model_key
from eef.algorithms.stages import eval_stage, train_stage


def run_sft(ctx: Context) -> Path:
    if not ctx.expert_successes:
        raise ValueError("the expert solved none of the training tasks: nothing to clone")
    if ctx.cfg.method.sft_model:
        model = sft_model_dir(ctx.cfg.method.sft_model)
        ctx.run.log_metrics({"stage": "train/sft", "key": model_key(model), "examples": 0,
                             "steps": 0, "same_as": "given", "init": str(model)})
    else:
        model = train_stage(ctx, "sft", ctx.base, ctx.expert_successes)
    eval_stage(ctx, "sft", 0, "sft", model)
    return model


def run_sft_all(ctx: Context) -> Path:
    """SFT-all: fine-tune the base model on every expert trajectory, failures included (every
    step trained), the naive way of using the expert's failures."""
    if not ctx.experts:
        raise ValueError("no expert trajectory to clone")
    model = train_stage(ctx, "sft_all", ctx.base, ctx.experts)
    eval_stage(ctx, "sft_all", 0, "sft_all", model)
    return model
