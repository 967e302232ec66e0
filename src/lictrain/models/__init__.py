"""Codec architectures by registry name."""

from lictrain.models.registry import ModelSpec, available_models, build_model, get_spec, register_model

__all__ = ["ModelSpec", "available_models", "build_model", "get_spec", "register_model"]
