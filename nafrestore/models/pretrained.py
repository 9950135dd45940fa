"""Named models, usable wherever a checkpoint path is (``infer --ckpt/--model``, ``eval --model``, ``export``,
``info``, ``nafrestore.load_model``, the training config's ``model.init_from``); ``nafrestore models`` lists them.

Two kinds:

- **shipped** inside the package: a safetensors file in ``nafrestore/weights/`` with its architecture in the
  metadata (as ``nafrestore export --format safetensors`` writes it) and a model card beside it (``NAME.md``) saying
  how it was made and where it stops being good. ``default`` (what ``nafrestore infer`` uses without ``--ckpt``)
  is one of them.
- **downloaded**: the official NAFNet releases. The architecture is a preset (``configs/<preset>.yaml``, which is
  also the config ``eval --model NAME`` takes its data from), the weights a published file fetched once by
  :func:`nafrestore.hub.fetch` (download, sha256 check, cache; offline afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..hub import RemoteFile, default_dirs, fetch, find_file, verify_file

#: Where the shipped weights live (package data).
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: A public mirror of the official NAFNet release files, byte-identical to them (the sha256 pins each file, so any
#: mirror set in ``$NAFRESTORE_MIRROR`` works as well).
NAFNET_MIRROR = "https://huggingface.co/nyanko7/nafnet-models/resolve/main"
NAFNET_LICENSE = "NAFNet (megvii-research/NAFNet), MIT license"


@dataclass(frozen=True)
class PretrainedModel:
    """A named model.

    Attributes:
        name: what users type (``--ckpt NAME``, ``--model NAME``, ``load_model(NAME)``).
        task: what it restores, in a few words.
        file: the weights' file name (in :data:`WEIGHTS_DIR` when shipped, else in the download cache).
        preset: the architecture, a ``configs/*.yaml`` name (None: in the file's own metadata, for shipped models).
        sha256: the file's published sha256 (downloaded models).
        size: the file's size in bytes, where known.
        urls: where the file is published (empty: shipped with the package).
        benchmark, psnr, ssim: the published figure (the test set, PSNR in dB, SSIM).
        license: the license and source of the weights.
    """

    name: str
    task: str
    file: str
    preset: str | None = None
    sha256: str | None = None
    size: int | None = None
    urls: tuple[str, ...] = ()
    benchmark: str | None = None
    psnr: float | None = None
    ssim: float | None = None
    license: str = "nafrestore, MIT license"

    @property
    def shipped(self) -> bool:
        """Whether the file ships inside the package (nothing to download)."""
        return not self.urls

    @property
    def path(self) -> Path:
        """Where a shipped model's file is (for a downloaded model see :func:`cached_file`)."""
        return WEIGHTS_DIR / self.file

    @property
    def card(self) -> Path:
        """The model card beside the weights."""
        return self.path.with_suffix(".md")

    @property
    def published(self) -> str:
        """The published figure in words, e.g. ``SIDD 39.97 dB / 0.960``; ``-`` when there is none."""
        if self.benchmark is None or self.psnr is None:
            return "-"
        return f"{self.benchmark} {self.psnr:.2f} dB" + (f" / {self.ssim:.3f}" if self.ssim is not None else "")

    @property
    def remote(self) -> RemoteFile | None:
        """The file as :func:`nafrestore.hub.fetch` downloads it; None for shipped models."""
        if self.shipped or self.sha256 is None:
            return None
        return RemoteFile(self.file, self.sha256, self.urls, self.size, f"the model {self.name}")


def _nafnet(
    name: str, task: str, *, file: str, sha256: str, published: tuple[str, float, float], size: int | None = None
) -> PretrainedModel:
    """An official NAFNet release: built from the preset of the same name, the file on :data:`NAFNET_MIRROR`."""
    benchmark, psnr, ssim = published
    return PretrainedModel(
        name, task, file, preset=name, sha256=sha256, size=size, urls=(f"{NAFNET_MIRROR}/{file}",),
        benchmark=benchmark, psnr=psnr, ssim=ssim, license=NAFNET_LICENSE,
    )  # fmt: skip


PRETRAINED: dict[str, PretrainedModel] = {
    m.name: m
    for m in (
        PretrainedModel(
            "lka-nafnet-w12-denoise-real-v5",
            "blind denoising of real camera photographs (sRGB, JPEG), mild to strong noise, clean and textured "
            "photographs left as they are: v4's pair gated by a noise estimate that texture does not fool, its "
            "strong network fine-tuned to leave clean texture and never moving the colour of larger areas",
            "lka-nafnet-w12-denoise-real-v5.safetensors",
        ),
        PretrainedModel(
            "lka-nafnet-w12-denoise-real-v4",
            "blind denoising of real camera photographs (sRGB, JPEG), mild to strong noise: v3's noise-gated pair "
            "with the mild network's output blended with non-local means guided by it, for mild noise",
            "lka-nafnet-w12-denoise-real-v4.safetensors",
        ),
        PretrainedModel(
            "lka-nafnet-w12-denoise-real-v3",
            "blind denoising of real camera photographs (sRGB, JPEG), mild to strong noise: v2's noise-gated pair "
            "with the mild network's residual high-passed at 2 px on texture and 4 px where flat, so that clean "
            "photographs stay as they are",
            "lka-nafnet-w12-denoise-real-v3.safetensors",
        ),
        PretrainedModel(
            "lka-nafnet-w12-denoise-real-v2",
            "blind denoising of real camera photographs (sRGB, JPEG), mild to strong noise: a noise-gated pair of "
            "LKA-NAFNets width 12 (the first default for mild noise, a strong-noise network)",
            "lka-nafnet-w12-denoise-real-v2.safetensors",
        ),
        PretrainedModel(
            "lka-nafnet-w12-denoise-real",
            "blind denoising of real camera photographs (sRGB, JPEG), mild noise, LKA-NAFNet width 12 (the first "
            "default model)",
            "lka-nafnet-w12-denoise-real.safetensors",
        ),
        _nafnet(
            "nafnet-sidd-width32",
            "real camera noise (SIDD sRGB), NAFNet width 32",
            file="NAFNet-SIDD-width32.pth",
            sha256="89c70e808d1783b6c07911306e106aaf0d4f7f3da8c61078b99ff7f8929a26f4",
            size=116_861_841,
            published=("SIDD", 39.97, 0.960),
        ),
        _nafnet(
            "nafnet-sidd-width64",
            "real camera noise (SIDD sRGB), NAFNet width 64",
            file="NAFNet-SIDD-width64.pth",
            sha256="cd685efaae01f7c4e9951f2deab05780079c8eb1e49ed664b72f6db04dabb445",
            published=("SIDD", 40.30, 0.961),
        ),
        _nafnet(
            "nafnet-gopro-width32",
            "motion deblurring (GoPro), NAFNet width 32, TLC",
            file="NAFNet-GoPro-width32.pth",
            sha256="19394e6155d12ef6371d1d57496f87f0ec88f92bdffa27c0792690722d5d1a5c",
            published=("GoPro", 32.87, 0.961),
        ),
        _nafnet(
            "nafnet-gopro-width64",
            "motion deblurring (GoPro), NAFNet width 64, TLC",
            file="NAFNet-GoPro-width64.pth",
            sha256="329d3ab4077b8d6b7ff61de376e483714667960bf85be027bf4335cda701196f",
            published=("GoPro", 33.71, 0.967),
        ),
        _nafnet(
            "nafnet-reds-width64",
            "deblurring JPEG-compressed video frames (REDS), NAFNet width 64, TLC",
            file="NAFNet-REDS-width64.pth",
            sha256="175fe8b3cdf3abedfbc87769779c3d9f491e05bb2e73ea9d627883f90a4b2df3",
            published=("REDS", 29.09, 0.867),
        ),
    )
}
#: Other names for registry entries.
ALIASES = {"default": "lka-nafnet-w12-denoise-real-v5"}
DEFAULT = "default"


def find_pretrained(name: str | Path) -> PretrainedModel | None:
    """The registry entry ``name`` names (an alias too), or None when it is not a registry name."""
    key = str(name)
    return PRETRAINED.get(ALIASES.get(key, key))


def model_names() -> list[str]:
    """Every name :func:`find_pretrained` knows: the registry's, then the aliases."""
    return [*PRETRAINED, *ALIASES]


def pretrained_file(name: str | Path, *, offline: bool | None = None) -> Path | None:
    """The weights file of the named model, downloaded first if needed; None when ``name`` is not a registry name.

    Args:
        name: a registry name or alias.
        offline: True never downloads (default: :func:`nafrestore.hub.is_offline`).

    Raises:
        CheckpointError: a shipped model whose file is not installed.
        DownloadError: a downloaded model that is missing and cannot be fetched, or fails its checksum.
    """
    model = find_pretrained(name)
    if model is None:
        return None
    remote = model.remote
    if remote is not None:
        return fetch(remote, offline=offline)
    if not model.path.is_file():
        raise CheckpointError(
            f"The model {str(name)!r} ({model.name}) should ship with nafrestore as {model.path}, but that file is "
            f"missing: reinstall nafrestore, or give a checkpoint with --ckpt."
        )
    return model.path


def cached_file(model: PretrainedModel) -> Path | None:
    """Where the model's file is now (the shipped file, or the first copy in the download caches), without
    downloading or verifying; None when there is none."""
    if model.remote is None:
        return model.path if model.path.is_file() else None
    return find_file(model.file, default_dirs())


def model_status(model: PretrainedModel) -> dict[str, Any]:
    """What ``nafrestore models`` shows of one entry: ``name``, ``task``, ``size`` (bytes or None), ``published``,
    ``license``, ``path`` (the local file or None) and ``status``: ``shipped``, ``missing`` (a shipped file that is
    not installed), ``verified``, ``not downloaded`` or ``checksum mismatch``."""
    path = cached_file(model)
    remote = model.remote
    if remote is None:
        status = "shipped" if path is not None else "missing"
    elif path is None:
        status = "not downloaded"
    else:
        status = "verified" if verify_file(path, remote) is None else "checksum mismatch"
    size = model.size if model.size is not None else (path.stat().st_size if path is not None else None)
    return {
        "name": model.name,
        "task": model.task,
        "size": size,
        "published": model.published,
        "license": model.license,
        "path": str(path) if path is not None else None,
        "status": status,
    }


__all__ = [
    "ALIASES",
    "DEFAULT",
    "NAFNET_LICENSE",
    "NAFNET_MIRROR",
    "PRETRAINED",
    "WEIGHTS_DIR",
    "PretrainedModel",
    "cached_file",
    "find_pretrained",
    "model_names",
    "model_status",
    "pretrained_file",
]
