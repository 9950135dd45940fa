"""Pairing files: which degraded image goes with which ground truth, in plain folders and in the SIDD and GoPro
layouts. Every function returns ``[(name, lq_path, gt_path), ...]`` sorted by name, where name is the relative path
without extension; every problem raises :class:`~nafrestore.errors.DataError` naming the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .io import list_images

__all__ = ["first_few", "folder_images", "gopro_pairs", "match_pairs", "sidd_train_pairs"]

_SHOW = 5  # offending names listed in error messages


def first_few(names: Sequence[str]) -> str:
    """The first few names, comma-separated, with ``...`` when there are more (for error messages)."""
    shown = ", ".join(str(n) for n in names[:_SHOW])
    return shown + (", ..." if len(names) > _SHOW else "")


def folder_images(folder: str | Path, key: str) -> tuple[list[Path], list[str]]:
    """Images under a folder and their names (relative path without extension).

    Raises:
        DataError: naming ``key`` (the option or config key that gave the folder) when it is missing or empty.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{key} folder {root} does not exist. Set {key} to a folder of clean images.")
    paths = list_images(root)
    if not paths:
        raise DataError(f"{key} folder {root} holds no images. Add .png/.jpg/.tif images or fix {key}.")
    return paths, [p.relative_to(root).with_suffix("").as_posix() for p in paths]


def _index_by_stem(folder: Path, role: str) -> dict[str, Path]:
    """{relative path without extension: file} for the images under ``folder``; duplicates are an error."""
    if folder.is_file():  # e.g. eval --gt a.png: a folder is wanted, and the file does exist
        raise DataError(
            f"The {role} folder {folder} is a file, not a folder. Give the folder that holds the images; pairs are "
            f"matched by relative path and name."
        )
    if not folder.is_dir():  # the role names where the path came from (--pred, --gt, or the config's data paths)
        raise DataError(f"The {role} folder {folder} does not exist. Check that path.")
    index: dict[str, Path] = {}
    duplicates: list[str] = []
    for path in list_images(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in index:
            duplicates.append(f"{index[key].name} / {path.name}")
        index[key] = path
    if duplicates:
        raise DataError(
            f"The {role} folder {folder} has {len(duplicates)} name(s) with more than one image file "
            f"({first_few(duplicates)}), so pairs would be ambiguous. Keep one file per name."
        )
    if not index:
        raise DataError(f"The {role} folder {folder} holds no images ({', '.join(('.png', '.jpg', '.tif'))}, ...).")
    return index


def match_pairs(
    lq_dir: str | Path, gt_dir: str | Path, roles: tuple[str, str] = ("input (lq)", "ground-truth (gt)")
) -> list[tuple[str, Path, Path]]:
    """Pairs the images of two folders by relative path and stem; extensions may differ (``a/x.jpg``-``a/x.png``).

    Returns:
        ``[(name, lq_path, gt_path), ...]`` sorted by name, where name is the relative path without extension.

    Raises:
        DataError: a folder is missing or empty, a name has two files, or some images have no partner (the message
            gives the counts and the first few names on each side).
    """
    lq_dir, gt_dir = Path(lq_dir), Path(gt_dir)
    lq, gt = _index_by_stem(lq_dir, roles[0]), _index_by_stem(gt_dir, roles[1])
    lq_only = sorted(set(lq) - set(gt))
    gt_only = sorted(set(gt) - set(lq))
    if lq_only or gt_only:
        parts = []
        if lq_only:
            parts.append(f"{len(lq_only)} of {len(lq)} images in {lq_dir} have no ground truth ({first_few(lq_only)})")
        if gt_only:
            parts.append(f"{len(gt_only)} of {len(gt)} images in {gt_dir} have no input ({first_few(gt_only)})")
        raise DataError(
            f"Unmatched image pairs: {'; '.join(parts)}. Inputs and targets are paired by relative path and file "
            "name without extension; rename or remove the unmatched files."
        )
    return [(name, lq[name], gt[name]) for name in sorted(lq)]


def sidd_train_pairs(root: str | Path, key: str = "data.root") -> list[tuple[str, Path, Path]]:
    """The SIDD-Medium sRGB training pairs: ``ROOT/Data/<scene>/NOISY_SRGB_<n>.PNG`` with ``GT_SRGB_<n>.PNG``.

    ``key`` names the option or config key that gave ``root``, for error messages.

    Returns:
        ``[("<scene>/<n>", noisy_path, gt_path), ...]`` sorted by name.
    """
    data = Path(root) / "Data"
    if not data.is_dir():
        raise DataError(
            f"SIDD training folder {data} does not exist. {key} must be the SIDD-Medium sRGB folder holding "
            "Data/<scene>/NOISY_SRGB_*.PNG and GT_SRGB_*.PNG (plus the validation .mat files)."
        )
    pairs: list[tuple[str, Path, Path]] = []
    missing: list[str] = []
    for noisy in list_images(data):
        stem = noisy.stem
        if not stem.upper().startswith("NOISY_SRGB_"):
            continue
        suffix = stem[len("NOISY_SRGB_") :]
        candidates = [noisy.with_name(f"{prefix}{suffix}{noisy.suffix}") for prefix in ("GT_SRGB_", "gt_srgb_")]
        gt = next((c for c in candidates if c.is_file()), None)
        name = f"{noisy.parent.relative_to(data).as_posix()}/{suffix}"
        if gt is None:
            missing.append(str(candidates[0]))
        else:
            pairs.append((name, noisy, gt))
    if missing:
        raise DataError(
            f"{len(missing)} SIDD noisy images have no ground truth next to them (expected {first_few(missing)}). "
            "Re-extract the dataset."
        )
    if not pairs:
        raise DataError(f"No NOISY_SRGB_*.PNG images found under {data}. Is {key} the SIDD-Medium sRGB folder?")
    return sorted(pairs)


def gopro_pairs(root: str | Path, split: str, key: str = "data.root") -> list[tuple[str, Path, Path]]:
    """The GoPro pairs of a split: ``ROOT/<split>/<sequence>/blur/*.png`` with ``.../sharp/*.png`` (``key``: the
    option or config key that gave ``root``, for error messages).

    Returns:
        ``[("<sequence>/<stem>", blur_path, sharp_path), ...]`` sorted by name.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(
            f"GoPro {split} folder {folder} does not exist. {key} must hold train/ and test/, each with "
            "<sequence>/blur/*.png and <sequence>/sharp/*.png."
        )
    sequences = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    pairs: list[tuple[str, Path, Path]] = []
    for sequence in sequences:
        if not (sequence / "blur").is_dir() and not (sequence / "sharp").is_dir():
            continue  # not a sequence (e.g. a stray folder)
        for name, blur, sharp in match_pairs(sequence / "blur", sequence / "sharp"):
            pairs.append((f"{sequence.name}/{name}", blur, sharp))
    if not pairs:
        raise DataError(f"No GoPro sequences found under {folder} (expected {folder}/<sequence>/blur and sharp).")
    return pairs
