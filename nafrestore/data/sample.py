"""The built-in offline dataset: photographs shipped inside the scikit-image package.

scikit-image installs a handful of test photographs in its ``skimage/data`` folder (the files behind
``skimage.data.astronaut()``, ``camera()``, ``coffee()``, ...). They are read here directly from that folder with
Pillow (``page.png`` carries a malformed ICC profile on which libpng, under OpenCV, prints a warning), never through
``skimage.data``'s loaders, which would try to download anything missing: this dataset needs no network. Only
photographs are used; synthetic or binary pictures (checkerboards, the horse silhouette, the logo, the phantom, the
colour wheel), the tiny microaneurysms crop, the already motion-blurred clock, the near-duplicate right stereo view,
and the mostly black (so clipped under noise) Hubble deep field and retina are left out.

The split is fixed by name (not random), so scores are comparable between runs and machines:

* validation (4): ``astronaut`` (512x512 colour), ``chelsea`` (300x451 colour), ``camera`` (512x512 gray),
  ``coins`` (303x384 gray);
* training (11): colour ``coffee`` (400x600), ``rocket`` (427x640), ``motorcycle`` (500x741, left stereo view),
  ``immunohistochemistry`` (512x512); gray ``brick``, ``grass``, ``gravel``, ``moon`` (512x512 each), ``page``
  (191x384), ``text`` (172x448), ``cell`` (660x550).

Grayscale photographs are replicated to three channels. Colour photographs count twice in training sampling
(:data:`TRAIN_WEIGHT_COLOUR`), since the networks restore colour images. A photograph whose file is missing from
the installed scikit-image version is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage
from PIL import Image

from ..errors import DataError

__all__ = ["SAMPLE_FILES", "SAMPLE_SPLIT", "TRAIN_WEIGHT_COLOUR", "sample_data_dir", "sample_images", "sample_weights"]

#: name -> file in skimage/data (the name is the skimage.data loader's, except ``motorcycle``).
SAMPLE_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "camera": "camera.png",
    "coins": "coins.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle": "motorcycle_left.png",
    "immunohistochemistry": "ihc.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "moon": "moon.png",
    "page": "page.png",
    "text": "text.png",
    "cell": "cell.png",
}

#: The fixed split: at least one colour and one grayscale photograph in validation.
SAMPLE_SPLIT: dict[str, tuple[str, ...]] = {
    "val": ("astronaut", "chelsea", "camera", "coins"),
    "train": (
        "coffee", "rocket", "motorcycle", "immunohistochemistry",
        "brick", "grass", "gravel", "moon", "page", "text", "cell",
    ),
}  # fmt: skip

#: Training sampling weight of colour photographs (grayscale ones have 1).
TRAIN_WEIGHT_COLOUR = 2


def sample_data_dir() -> Path:
    """The ``data`` folder of the installed scikit-image package."""
    return Path(skimage.__file__).parent / "data"


def _read_rgb(path: Path) -> np.ndarray:
    """An 8-bit photograph as (H, W, 3) float32 in [0, 1], grayscale replicated to RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def sample_images(split: str) -> list[tuple[str, np.ndarray]]:
    """The photographs of a split, in :data:`SAMPLE_SPLIT` order.

    Args:
        split: ``"train"`` or ``"val"``.

    Returns:
        ``[(name, image), ...]`` with images (H, W, 3) float32 in [0, 1], RGB (grayscale replicated).

    Raises:
        DataError: none of the split's files is present in the installed scikit-image.
    """
    if split not in SAMPLE_SPLIT:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    folder = sample_data_dir()
    images = []
    for name in SAMPLE_SPLIT[split]:
        path = folder / SAMPLE_FILES[name]
        if path.is_file():  # present in this scikit-image version; never fetched
            images.append((name, _read_rgb(path)))
    if not images:
        raise DataError(
            f"None of the sample photographs of the {split!r} split ({', '.join(SAMPLE_SPLIT[split])}) is in "
            f"{folder}. Reinstall scikit-image, or use another data.format."
        )
    return images


def sample_weights(images: list[tuple[str, np.ndarray]]) -> list[int]:
    """Training weights: :data:`TRAIN_WEIGHT_COLOUR` for colour photographs, 1 for grayscale ones."""
    return [TRAIN_WEIGHT_COLOUR if _is_colour(image) else 1 for _, image in images]


def _is_colour(image: np.ndarray) -> bool:
    return not (np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2]))
