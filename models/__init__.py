"""The attention network zoo: every network is built by name with `create_model`."""
from . import cifar_resnet, efficientnet_lite, gated_fusion, lwa_resnet, resnet, tad_resnext  # noqa: F401  (importing registers the entrypoints)
from ._registry import create_model, is_model, list_models, register_model
from .efficientnet_lite import imagenet_state_dict

__all__ = ["create_model", "imagenet_state_dict", "is_model", "list_models", "register_model"]
