"""Errors shared across layers: a policy spec that cannot be resolved and the model backends'
failures (each message names what to fix).  This module imports nothing of eef, so every layer
can raise and catch them."""

from __future__ import annotations


class PolicySpecError(ValueError):
    """A policy spec string could not be resolved."""


class ModelError(RuntimeError):
    """Base class of model-layer errors."""


class ModelNotFoundError(PolicySpecError):
    """A model path does not exist or a model id cannot be loaded."""


class ModelMismatchError(ModelError):
    """The tokenizer and the model do not fit together (e.g. vocabulary larger than the
    model's embedding table)."""


class EndpointError(ModelError):
    """An OpenAI-compatible endpoint could not be reached or kept failing after retries."""
