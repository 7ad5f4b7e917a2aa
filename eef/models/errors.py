"""Errors of the model layer (each names what to fix)."""

from __future__ import annotations

from eef.policy import PolicySpecError


class ModelError(RuntimeError):
    """Base class of model-layer errors."""


class ModelNotFoundError(PolicySpecError):
    """A model path does not exist or a model id cannot be loaded."""


class ModelMismatchError(ModelError):
    """The tokenizer and the model do not fit together (e.g. vocabulary larger than the
    model's embedding table)."""


class EndpointError(ModelError):
    """An OpenAI-compatible endpoint could not be reached or kept failing after retries."""
