"""The attention network zoo: every network is built by name with `create_model`."""
from . import resnet  # noqa: F401  (registers the entrypoints)
from ._registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
