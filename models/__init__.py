"""The attention network zoo: every network is built by name with `create_model`."""
from . import cifar_resnet, gated_fusion, lwa_resnet, resnet, tad_resnext  # noqa: F401  (importing registers the entrypoints)
from ._registry import create_model, is_model, list_models, register_model

__all__ = ["create_model", "is_model", "list_models", "register_model"]
