"""Model registry: build networks by name with ``create_model(name, **kwargs)``.

Outside ``models/`` networks are built through :func:`nafrestore.loading.build_model` (from a config or a
checkpoint), which wraps :func:`create_model` with a user-facing error.
"""

from __future__ import annotations

from torch import nn

from ..registry import Registry
from .gated import NoiseGatedPair
from .nafnet import LKANAFNet, NAFNet

MODELS: Registry = Registry("model")
MODELS.register("nafnet")(NAFNet)
MODELS.register("lka_nafnet")(LKANAFNet)
MODELS.register("noise_gated_pair")(NoiseGatedPair)


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


def in_channels(model: nn.Module) -> int:
    """Image channels the network takes (3 for RGB models): its ``intro`` conv's, else its first conv's."""
    if hasattr(model, "intro"):
        return int(model.intro.in_channels)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)


def list_models() -> list[str]:
    """The registered model names."""
    return MODELS.names()


__all__ = ["MODELS", "LKANAFNet", "NAFNet", "NoiseGatedPair", "create_model", "in_channels", "list_models"]
