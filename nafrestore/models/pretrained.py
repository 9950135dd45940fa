"""Named models: the ones that ship inside the package, usable wherever a checkpoint path is (``infer``, ``eval``,
``export``, ``info``, ``nafrestore.load_model``).

``default`` is the model ``nafrestore infer`` uses without ``--ckpt``. Each shipped model is a safetensors file in
``nafrestore/weights/`` with its architecture in the metadata (as ``nafrestore export --format safetensors`` writes
it) and a model card beside it (``NAME.md``) saying how it was made and where it stops being good.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

#: Where the shipped weights live (package data).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class PretrainedModel:
    """A named model.

    Attributes:
        name: what users type (``--ckpt NAME``, ``load_model(NAME)``).
        task: what it restores, in a few words.
        file: the weights' file name in :data:`WEIGHTS_DIR`.
    """

    name: str
    task: str
    file: str

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def card(self) -> Path:
        """The model card beside the weights."""
        return self.path.with_suffix(".md")


PRETRAINED: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel(
            "lka-nafnet-w12-denoise-real",
            "blind denoising of real camera photographs (sRGB, JPEG), LKA-NAFNet width 12",
            "lka-nafnet-w12-denoise-real.safetensors",
        ),
    )
}
#: Other names for registry entries.
ALIASES = {"default": "lka-nafnet-w12-denoise-real"}
DEFAULT = "default"


def find_pretrained(name: str | Path) -> PretrainedModel | None:
    """The registry entry ``name`` names (an alias too), or None when it is not a registry name."""
    key = str(name)
    return PRETRAINED.get(ALIASES.get(key, key))


def pretrained_file(name: str | Path) -> Path | None:
    """The weights file of the named model, or None when ``name`` is not a registry name.

    Raises:
        CheckpointError: a registry name whose file is not installed.
    """
    model = find_pretrained(name)
    if model is None:
        return None
    if not model.path.is_file():
        raise CheckpointError(
            f"The model {str(name)!r} ({model.name}) should ship with nafrestore as {model.path}, but that file is "
            f"missing: reinstall nafrestore, or give a checkpoint with --ckpt."
        )
    return model.path


__all__ = ["ALIASES", "DEFAULT", "PRETRAINED", "WEIGHTS_DIR", "PretrainedModel", "find_pretrained", "pretrained_file"]
