"""The image files of an HTML report, written while :func:`~nafrestore.evaluation.score` scores each image.

Every view of an image (the degraded input, each model's restored image, the ground truth) is written three times,
as soon as it is scored, so memory stays bounded whatever the number of images:

- ``images/<view>/<name>.png``: full size, lossless; loaded only when the viewer zooms past the preview;
- ``previews/<view>/<name>.jpg``: at most ``preview_side`` pixels on the longer side (quality 92); an image no
  larger than that has no preview file, its full-size PNG serves as the preview;
- ``thumbs/<view>/<name>.jpg``: at most ``thumb_side`` pixels, for the per-image table.

Paths are relative to the report folder, with ``/`` separators, so the HTML refers to them as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..data import save_image
from ..errors import OutputError

INPUT, GROUND_TRUTH = "input", "gt"
_UNSAFE = re.compile(r"[^\w.\- ]+")  # characters kept in file names: letters, digits, _ . - and space


def safe_relative(name: str) -> str:
    """An image name as a relative path that stays inside its folder: ``sub/b`` stays, ``../x`` becomes ``_/x``."""
    parts = [_UNSAFE.sub("_", part) for part in name.replace("\\", "/").split("/")]
    return "/".join("_" if part in ("", ".", "..") else part for part in parts)


class ReportImages:
    """Writes the report's images into ``folder`` (see the module docstring).

    One writer serves several models scored on the same images: :meth:`for_view` gives a writer for another
    restored view that shares this one's folder and its record of what was written, so the input and ground truth
    of an image are written once. A file that cannot be written stops the writing (scoring goes on, so the scores
    are not lost) and is kept in :attr:`error`, which :func:`~nafrestore.report.write_eval_report` raises after the
    scores are printed.

    Args:
        folder: the report folder.
        view: the key of the restored images (a folder name; ``restored`` for one model).
        preview_side, thumb_side: the longest side of the previews and thumbnails, in pixels.
    """

    def __init__(self, folder: str | Path, view: str = "restored", *, preview_side: int = 1024, thumb_side: int = 160):
        self.folder = Path(folder)
        self.view = view
        self.preview_side, self.thumb_side = preview_side, thumb_side
        self._record = _Record()

    @property
    def error(self) -> OutputError | None:
        """The first write that failed (None: all written)."""
        return self._record.error

    def for_view(self, view: str) -> ReportImages:
        """A writer of the restored images of another model, sharing this one's folder and record."""
        other = ReportImages(self.folder, view, preview_side=self.preview_side, thumb_side=self.thumb_side)
        other._record = self._record
        return other

    def write(
        self, name: str, *, restored: torch.Tensor, gt: torch.Tensor, lq: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Write one image's views (the input and ground truth only once) and return their files.

        Args:
            name: the image's name (its relative path without extension).
            restored, gt, lq: (C, H, W) tensors in [0, 1], C = 3 or 1 (gray, shown as gray).

        Returns:
            ``{view: {"full", "preview", "thumb", "width", "height"}}`` for ``input`` (with ``lq``), this writer's
            view and ``gt``; empty once a write has failed.
        """
        if self.error is not None:
            return {}
        views = [(INPUT, lq), (self.view, restored), (GROUND_TRUTH, gt)]
        try:
            return {view: self._write_view(view, name, image) for view, image in views if image is not None}
        except OutputError as exc:
            self._record.error = exc
            return {}

    def _write_view(self, view: str, name: str, image: torch.Tensor) -> dict[str, Any]:
        stem = self._stem(name)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        files = {
            "full": f"images/{view}/{stem}.png",
            "preview": f"previews/{view}/{stem}.jpg",
            "thumb": f"thumbs/{view}/{stem}.jpg",
            "width": width,
            "height": height,
        }
        if max(height, width) <= self.preview_side:
            files["preview"] = files["full"]
        if (view, name) in self._record.written:
            return files
        hwc = image.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy()
        save_image(self.folder / files["full"], hwc)
        if files["preview"] != files["full"]:
            save_image(self.folder / files["preview"], _fit(hwc, self.preview_side), quality=92)
        save_image(self.folder / files["thumb"], _fit(hwc, self.thumb_side), quality=85)
        self._record.written.add((view, name))
        return files

    def _stem(self, name: str) -> str:
        """The file stem of an image: its safe relative path, made unique where two names sanitise alike."""
        record = self._record
        if name not in record.stems:
            stem, n = safe_relative(name), 1
            while stem.lower() in record.taken:  # case-insensitive: file systems that ignore case
                n += 1
                stem = f"{safe_relative(name)}~{n}"
            record.stems[name] = stem
            record.taken.add(stem.lower())
        return record.stems[name]


@dataclass
class _Record:
    """What the writers of one report folder share: the files written, the stems given, the first failure."""

    written: set[tuple[str, str]] = field(default_factory=set)
    stems: dict[str, str] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)
    error: OutputError | None = None


def _fit(hwc: np.ndarray, side: int) -> np.ndarray:
    """``hwc`` scaled down (area averaging) so that its longer side is at most ``side``."""
    height, width = hwc.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return hwc
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    out = cv2.resize(np.ascontiguousarray(hwc), size, interpolation=cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 else out
