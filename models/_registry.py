"""Model registry: every architecture is built by name through `create_model`.

`@register_model` records an entrypoint under its function's name. Entrypoints build the
network and attach its data config (`_cfg()` next to the architecture); the registry adds the
architecture name, `num_classes` and the options used (`model_args`), so a checkpoint that saves
`pretrained_cfg` rebuilds its model with `create_model(cfg["architecture"], **cfg["model_args"])`.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from torch import nn

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model {name!r} is registered twice")

    @functools.wraps(fn)
    def entrypoint(**kwargs) -> nn.Module:
        try:
            model = fn(**kwargs)
        except TypeError as exc:
            # a misspelt option surfaces deep in a constructor; name the model it was meant for
            if "unexpected keyword argument" not in str(exc):
                raise
            raise ValueError(f"{name}: {exc}") from exc
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        cfg.update(architecture=name, num_classes=model.num_classes, model_args=dict(kwargs))
        model.pretrained_cfg = cfg
        return model

    module = sys.modules[fn.__module__]
    if hasattr(module, "__all__"):
        module.__all__.append(name)
    _model_entrypoints[name] = entrypoint
    return entrypoint


def list_models() -> list[str]:
    return sorted(_model_entrypoints)


def is_model(name: str) -> bool:
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _model_entrypoints:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _model_entrypoints[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered network. Options left as None fall back to the architecture's default."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return model_entrypoint(name)(**kwargs)
