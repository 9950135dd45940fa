"""Image files in and out, with OpenCV doing the codecs.

Reading gives float32 RGB in [0, 1] whatever the file holds (8- or 16-bit; grayscale, RGB or RGBA; PNG, TIFF,
JPEG, WebP, BMP), with the alpha channel kept aside untouched and the EXIF orientation applied. Writing is
atomic: the encoded bytes go to a temporary file in the destination folder, which is then renamed over the final
name, so an interrupted run never leaves a truncated image behind under the name a later run would trust.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import DataError
from ..utils.files import atomic_write
from ..utils.pixels import from_float, to_float

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "list_images",
    "load_image",
    "load_rgb_integer",
    "read_image",
    "read_image_size",
    "save_image",
]

#: File extensions (lower case, with the dot) that are read and written as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")

# Formats that carry an EXIF orientation tag in practice (cameras and phones write JPEG; scanners and raw
# converters write TIFF). WebP/PNG can hold EXIF too but almost never an orientation, and opening every PNG with
# PIL on top of OpenCV would cost time on large datasets.
_EXIF_EXTENSIONS = (".jpg", ".jpeg", ".tif", ".tiff")
# Formats without 16-bit samples: 16-bit requests fall back to 8 bits.
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
# Formats without an alpha channel: alpha is dropped.
_NO_ALPHA = (".jpg", ".jpeg")

_EXIF_ORIENTATION = 0x0112


@dataclass
class LoadedImage:
    """A decoded image file.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1], RGB order; grayscale files are replicated to three channels.
        alpha: (H, W) alpha channel in the file's own dtype (uint8 or uint16), untouched; None without one.
        bit_depth: 8 or 16, the file's bits per sample.
        channels: 1, 3 or 4, the channels as stored in the file (a gray+alpha PNG decodes as 4).
        path: the file that was read.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    channels: int
    path: Path


def _decode(path: Path) -> np.ndarray:
    """The file's samples as OpenCV gives them: (H, W) or (H, W, C) BGR(A), uint8 or uint16, EXIF-oriented."""
    if not path.is_file():
        raise DataError(f"Image file {path} does not exist (or is not a file). Check the path and the data config.")
    try:
        # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows and only
        # returns None without saying why.
        buffer = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"Image file {path} cannot be read ({exc}). Check its permissions.") from exc
    array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if array is None:
        raise DataError(
            f"Image file {path} cannot be decoded: it is empty, truncated, corrupt or not an image in a supported "
            f"format ({', '.join(IMAGE_EXTENSIONS)}). Re-export or remove it."
        )
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"Image file {path} holds {array.dtype} samples; only 8- and 16-bit integer images are supported. "
            "Convert it to an 8- or 16-bit PNG or TIFF."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if path.suffix.lower() in _EXIF_EXTENSIONS:
        # IMREAD_UNCHANGED ignores the EXIF orientation (IMREAD_COLOR would apply it but drops alpha and 16 bits).
        array = _apply_orientation(array, _exif_orientation(path))
    return array


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1-8), 1 when absent or unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # PIL cannot parse everything OpenCV decodes; no readable tag means upright
        return 1
    return int(value) if value in range(1, 9) else 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turns stored pixels upright for an EXIF orientation (the same result as PIL's ``exif_transpose``)."""
    if orientation == 2:  # mirrored left-right
        array = array[:, ::-1]
    elif orientation == 3:  # rotated 180
        array = array[::-1, ::-1]
    elif orientation == 4:  # mirrored top-bottom
        array = array[::-1]
    elif orientation == 5:  # transposed
        array = array.swapaxes(0, 1)
    elif orientation == 6:  # stored rotated 90 counter-clockwise: turn it 90 clockwise
        array = np.rot90(array, -1)
    elif orientation == 7:  # transversed
        array = array.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:  # stored rotated 90 clockwise: turn it 90 counter-clockwise
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _split(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(RGB (H, W, 3) in the file dtype, alpha (H, W) or None, channels in the file) from a decoded array."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2), None, 1
    channels = array.shape[2]
    if channels == 2:  # gray + alpha (OpenCV usually expands these to BGRA already)
        return np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1].copy(), 4
    rgb = np.ascontiguousarray(array[:, :, 2::-1])  # BGR(A) -> RGB
    alpha = array[:, :, 3].copy() if channels >= 4 else None
    return rgb, alpha, 4 if alpha is not None else 3


def load_rgb_integer(path: str | Path) -> np.ndarray:
    """The RGB samples of an image without conversion to float: (H, W, 3) uint8 or uint16, alpha dropped.

    Datasets cache this form (a quarter of the float32 size for 8-bit files) and convert crops to float on use
    (:func:`nafrestore.utils.pixels.to_float`).
    """
    rgb, _, _ = _split(_decode(Path(path)))
    return rgb


def load_image(path: str | Path) -> LoadedImage:
    """Reads an image file (8/16-bit PNG or TIFF, JPEG, WebP, BMP; grayscale, RGB or RGBA), EXIF-oriented.

    Returns:
        A :class:`LoadedImage`; ``rgb`` is (H, W, 3) float32 in [0, 1] in RGB order.

    Raises:
        DataError: the file is missing, unreadable, corrupt or not an image, naming it.
    """
    path = Path(path)
    array = _decode(path)
    rgb, alpha, channels = _split(array)
    return LoadedImage(
        rgb=to_float(rgb),
        alpha=alpha,
        bit_depth=16 if array.dtype == np.uint16 else 8,
        channels=channels,
        path=path,
    )


def read_image(path: str | Path) -> torch.Tensor:
    """Reads an image file as a (3, H, W) float32 tensor in [0, 1], RGB; alpha is dropped (see :func:`load_image`)."""
    return torch.from_numpy(np.ascontiguousarray(load_image(path).rgb.transpose(2, 0, 1)))


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image as :func:`load_image` would return it (EXIF orientation applied).

    Reads only the header through PIL when it can (milliseconds even for large files); falls back to decoding.
    """
    path = Path(path)
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if path.suffix.lower() in _EXIF_EXTENSIONS else 1
        if orientation in (5, 6, 7, 8):  # these orientations swap the axes
            width, height = height, width
        return int(height), int(width)
    except Exception:  # PIL does not know the format variant, or the file is broken: let the decoder decide
        array = _decode(path)
        return int(array.shape[0]), int(array.shape[1])


def _to_hwc(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, 3) float array from an (H, W, 3)/(H, W) array or a (3, H, W)/(1, 3, H, W)/(H, W) tensor."""
    if isinstance(rgb, torch.Tensor):
        tensor = rgb.detach().to("cpu", torch.float32)
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)
        array = tensor.numpy()
    else:
        array = np.asarray(rgb)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(
            f"save_image expects an (H, W, 3) array or a (3, H, W) tensor, got shape {tuple(np.shape(rgb))}"
        )
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an (..., 3) float array in [0, 1], as (...) in its dtype."""
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def _alpha_to(alpha: np.ndarray, bit_depth: int, shape: tuple[int, int]) -> np.ndarray:
    """Alpha in the output dtype: kept bit for bit when it already has it; rescaled exactly otherwise."""
    alpha = np.asarray(alpha)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[:, :, 0]
    if alpha.shape != shape:
        raise ValueError(f"alpha has shape {alpha.shape}, expected {shape} to match the image")
    target = np.uint16 if bit_depth == 16 else np.uint8
    if alpha.dtype == target:
        return alpha
    if np.issubdtype(alpha.dtype, np.floating):
        return from_float(alpha, bit_depth)
    if alpha.dtype == np.uint8:  # 8 -> 16 bits: 255 * 257 is the 16-bit peak, exact
        return alpha.astype(np.uint16) * np.uint16(257)
    if alpha.dtype == np.uint16:  # 16 -> 8 bits
        return np.rint(alpha / 257.0).astype(np.uint8)
    raise ValueError(f"alpha must be uint8, uint16 or float in [0, 1], got {alpha.dtype}")


def save_image(
    path: str | Path,
    rgb: np.ndarray | torch.Tensor,
    *,
    bit_depth: int = 8,
    grayscale: bool = False,
    alpha: np.ndarray | None = None,
    quality: int = 95,
) -> Path:
    """Writes an image atomically; the format follows the extension.

    Args:
        path: destination; parent folders are created. The extension picks the format (one of
            :data:`IMAGE_EXTENSIONS`).
        rgb: (H, W, 3) float array in [0, 1], RGB order, or a (3, H, W) tensor (any device; a leading batch
            dimension of 1 is accepted). Values are clamped to [0, 1] and rounded to the nearest level.
        bit_depth: 8 or 16. JPEG, WebP and BMP have no 16-bit samples and are written with 8.
        grayscale: write one channel, the BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (not the mean), the same
            weights as the Y channel used for scoring.
        alpha: (H, W) alpha appended as a fourth channel. Integer alpha of the output depth is written unchanged
            (a uint8 alpha from :func:`load_image` round-trips exactly); uint8/uint16 alpha of the other depth is
            rescaled exactly (x257) or rounded; float alpha is read as [0, 1]. JPEG cannot store alpha, which is
            dropped; grayscale with alpha writes RGBA with equal colour channels (PNG via OpenCV has no
            gray+alpha).
        quality: JPEG/WebP quality, 1-100.

    Returns:
        The path written.

    Raises:
        DataError: the extension is not a supported image format or the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise DataError(
            f"Cannot save {path}: {suffix or 'no extension'!r} is not an image format. "
            f"Use one of {', '.join(IMAGE_EXTENSIONS)}."
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if suffix in _EIGHT_BIT_ONLY:
        bit_depth = 8
    array = _to_hwc(rgb)
    height, width = array.shape[:2]
    if grayscale:
        luma = rgb_to_luma(array)
        samples = from_float(luma, bit_depth)
        if alpha is not None and suffix not in _NO_ALPHA:
            samples = np.repeat(samples[:, :, None], 3, axis=2)
    else:
        samples = from_float(array[:, :, ::-1], bit_depth)  # RGB -> BGR for OpenCV
    if alpha is not None and suffix not in _NO_ALPHA:
        samples = np.concatenate([samples, _alpha_to(alpha, bit_depth, (height, width))[:, :, None]], axis=2)
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(samples), params)
    if not ok:
        raise DataError(f"OpenCV could not encode {path} as {suffix} ({samples.shape}, {samples.dtype}).")
    _write_atomic(path, encoded.tobytes())
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    """Writes bytes atomically (:func:`~nafrestore.utils.files.atomic_write`); OS errors name the file."""
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as exc:
        raise DataError(f"Cannot write {path}: {exc}. Check that the folder is writable and has free space.") from exc


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(
    inputs: str | Path | Iterable[str | Path], *, recursive: bool = True, glob: str | None = None
) -> list[Path]:
    """Image files among files and folders, sorted.

    Args:
        inputs: a file or folder, or several. Folders are searched (recursively by default) for files with an
            image extension (case-insensitive, :data:`IMAGE_EXTENSIONS`); hidden files and folders (leading dot)
            are skipped, which also skips macOS ``._x.png`` companions and leftover temporary files. Named files
            without an image extension are skipped too, so a shell glob like ``inputs/*`` works.
        recursive: descend into sub-folders.
        glob: optional ``fnmatch`` pattern; a file is kept when its name or its path relative to the input folder
            (with ``/``) matches, e.g. ``"*_noisy.png"`` or ``"scene1/*"``.

    Returns:
        Unique paths sorted by their string form.

    Raises:
        DataError: an input does not exist.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            candidates = root.rglob("*") if recursive else root.glob("*")
            for path in candidates:
                relative = path.relative_to(root)
                if any(part.startswith(".") for part in relative.parts) or not path.is_file() or not _is_image(path):
                    continue
                if glob is None or fnmatch.fnmatch(path.name, glob) or fnmatch.fnmatch(relative.as_posix(), glob):
                    found.add(path)
        elif root.is_file():
            if _is_image(root) and (glob is None or fnmatch.fnmatch(root.name, glob)):
                found.add(root)
        else:
            raise DataError(f"Input {root} does not exist. Give an existing image file or folder of images.")
    return sorted(found, key=lambda p: str(p))
