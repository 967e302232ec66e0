"""Codec architectures by registry name.

Importing this package registers the built-in models: each model module below adds itself to
the (leaf) registry with ``@register_model`` when imported. CompressAI itself is imported only
by the zoo factories, so this stays cheap.
"""

from lictrain.models.registry import ModelSpec, available_models, build_model, get_spec, register_model

# Imported for their registration side effect (order fixes nothing: names are unique).
from lictrain.models import compressai_zoo, hpcm  # noqa: F401  isort: skip

__all__ = ["ModelSpec", "available_models", "build_model", "get_spec", "register_model"]
