"""SFT (behaviour cloning): fine-tune the base model on the expert's successful trajectories
with the action-masked loss of Eq. 1.  This is also iteration 0 of RFT, RFT×N and EEF."""

from __future__ import annotations

from pathlib import Path

from eef.algorithms.common import Context, eval_stage, train_stage


def run_sft(ctx: Context) -> Path:
    if not ctx.expert_successes:
        raise ValueError("the expert solved none of the training tasks: nothing to clone")
    model = train_stage(ctx, "sft", ctx.base, ctx.expert_successes)
    eval_stage(ctx, "sft", 0, "sft", model)
    return model
