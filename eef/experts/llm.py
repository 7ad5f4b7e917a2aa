"""The LLM expert: a language model (GPT-4 through an OpenAI-compatible endpoint, a vLLM server,
a local ``hf:`` model) prompted to act in the env, as in the paper's GPT-4 expert setting.

``make_expert(env, "llm", policy="openai:gpt-4o@https://api.openai.com/v1")`` (CLI:
``eef expert collect webshop --expert llm --policy openai:...``) wraps that policy with a
system message describing the env's action format; importing this module registers the
``llm`` expert for ``webshop`` and ``sciworld``.  Its spec is ``expert:llm(<inner spec>)`` so
trajectories record which model acted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from eef.experts import register_expert
from eef.policy import PolicySpecError, Sampling, load_policy

if TYPE_CHECKING:
    from eef.envs.base import TextEnv
    from eef.trajectory import Trajectory

_FORMAT = ("Answer every turn with exactly two lines:\n"
           "Thought: <one short sentence of reasoning>\n"
           "Action: <one action>\n"
           "The user's messages are the pages you see (observations); nothing else.")

SYSTEM_PROMPTS: dict[str, str] = {
    "webshop": (
        "You are shopping on a web store for the product an instruction describes: right "
        "attributes, right options (size, colour, ...) and a price under the limit.\n"
        "Actions: search[keywords] on a page with a search box; click[text] to click one of the "
        "clickable items of the current page, written exactly as shown between [SEP] markers: a "
        "product id such as B06Y3VLDFB, an option value, 'Buy Now', 'Next >', '< Prev', "
        "'Back to Search', 'Description', 'Features', 'Reviews'.  Open a product, choose each of "
        "its options that the instruction names, then click 'Buy Now'.\n" + _FORMAT),
    "sciworld": (
        "You are an agent in a text simulation of science experiments; complete the task you are "
        "given.  Typical actions: look around, inventory, open OBJ, close OBJ, go to LOCATION, "
        "pick up OBJ, put down OBJ, move OBJ to OBJ, pour OBJ into OBJ, focus on OBJ (only on the "
        "object the task asks about: a wrong focus ends the episode), activate OBJ, "
        "deactivate OBJ, use OBJ on OBJ, read OBJ, connect OBJ to OBJ, mix OBJ, wait, wait1. "
        "Use object names exactly as the observations write them.\n" + _FORMAT),
}


class LLMExpert:
    """A model policy with the env's system prompt (``Policy`` protocol)."""

    def __init__(self, env: "TextEnv", policy: str | None = None, system: str | None = None,
                 **policy_kw: Any):
        if not policy:
            raise PolicySpecError("the llm expert needs a model: policy='openai:MODEL@URL' "
                                  "(or hf:PATH)")
        if policy.startswith("expert:"):
            raise PolicySpecError(f"the llm expert wraps a model, not {policy!r}")
        name = getattr(env, "base_name", getattr(env, "name", ""))
        self.system = system if system is not None else SYSTEM_PROMPTS.get(name, _FORMAT)
        self.inner = load_policy(policy, env, system=self.system, **policy_kw)
        self.spec = f"expert:llm({self.inner.spec})"

    def act(self, contexts: Sequence["Trajectory"], sampling: Sampling | None = None,
            seeds: Sequence[int] | None = None) -> list[str]:
        out = self.inner.act(contexts, sampling, seeds)
        self.last_generated_tokens = getattr(self.inner, "last_generated_tokens", None)
        return out


for _env in SYSTEM_PROMPTS:
    register_expert(_env, "llm", "eef.experts.llm:LLMExpert")
