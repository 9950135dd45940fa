"""Model registry: build networks by name with ``create_model(name, **kwargs)``."""

from __future__ import annotations

from torch import nn

from ..registry import Registry
from .nafnet import LKANAFNet, NAFNet

MODELS: Registry = Registry("model")
MODELS.register("nafnet")(NAFNet)
MODELS.register("lka_nafnet")(LKANAFNet)


def create_model(name: str, *, tlc_train_size: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered name (see :func:`list_models`).
        tlc_train_size: turn the test-time local converter on for this training patch size (None: off).
        **kwargs: the model's own arguments (e.g. ``width``, ``enc_blocks``).
    """
    model = MODELS.get(name)(**kwargs)
    if tlc_train_size is not None:
        model.set_tlc(tlc_train_size)
    return model


def model_from_config(name: str, args: dict, tlc: bool = False, tlc_train_size: int = 256) -> nn.Module:
    """Build the model a config's ``model`` section describes (its fields passed as plain arguments)."""
    return create_model(name, tlc_train_size=tlc_train_size if tlc else None, **args)


def list_models() -> list[str]:
    """The registered model names."""
    return MODELS.names()


__all__ = ["MODELS", "LKANAFNet", "NAFNet", "create_model", "list_models", "model_from_config"]
