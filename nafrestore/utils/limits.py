"""The largest image nafrestore decodes: a guard against decompression bombs.

A compressed image file can be small and still declare a huge size: a 1.2 MB PNG of zero rows can say it is
20000x20000, which decodes to 1.2 GB of 8-bit samples and to 4.8 GB as the float32 RGB that ``infer`` and ``eval``
hold. So every image's size is read from its header first (:mod:`nafrestore.data.io`), and an image with more
pixels than the limit is refused, naming the file, before any of its pixels is decoded. ``infer`` reports it among
its failed files and goes on with the next; ``eval``, ``prepare`` and training stop with the message.

The limit is in megapixels: :data:`DEFAULT_MAX_IMAGE_MEGAPIXELS` unless ``$NAFRESTORE_MAX_IMAGE_MEGAPIXELS`` says
otherwise, or within :func:`image_limit` (what the commands' ``--max-image-megapixels`` sets; worker processes
started inside inherit it). 250 megapixels is well above the largest camera sensors (150-megapixel medium-format
backs, 14204x10652) and a 6000x4000 photograph's 24, and below the 400 of the file above; an image of 250
megapixels takes 3 GB as float32 RGB. ``inf`` turns the guard off. OpenCV, which decodes the files, has its own
limit (``$OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 pixels by default, read when OpenCV is loaded) above that.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError, ImageTooLargeError

__all__ = [
    "DEFAULT_MAX_IMAGE_MEGAPIXELS",
    "ENV_MAX_IMAGE_MEGAPIXELS",
    "LIMIT_OPTION",
    "check_image_pixels",
    "check_megapixels",
    "image_limit",
    "max_image_megapixels",
]

#: The environment variable that sets the limit, in megapixels (e.g. ``NAFRESTORE_MAX_IMAGE_MEGAPIXELS=500``).
ENV_MAX_IMAGE_MEGAPIXELS = "NAFRESTORE_MAX_IMAGE_MEGAPIXELS"
#: The limit when nothing sets it, in megapixels.
DEFAULT_MAX_IMAGE_MEGAPIXELS = 250.0
#: The command-line option that sets it (``infer``, ``eval``, ``prepare``, ``train``).
LIMIT_OPTION = "--max-image-megapixels"


def check_megapixels(value: object, where: str, example: str = "e.g. 500; inf: no limit") -> float:
    """``value`` as a limit in megapixels: a positive number, ``inf`` for none.

    Args:
        value: the setting as given.
        where: the option, variable or argument it came from, named in the error.
        example: what the error shows as a valid setting and what ``inf`` means there.

    Raises:
        ConfigError: anything else (NaN, zero, negative, not a number), naming ``where`` it came from.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0:  # also NaN
        raise ConfigError(f"{where} must be a positive number of megapixels ({example}), got {value!r}.")
    return number


def max_image_megapixels() -> float:
    """The limit now: ``$NAFRESTORE_MAX_IMAGE_MEGAPIXELS`` when set, else :data:`DEFAULT_MAX_IMAGE_MEGAPIXELS`.

    Raises:
        ConfigError: the variable holds something other than a positive number (or ``inf``).
    """
    value = os.environ.get(ENV_MAX_IMAGE_MEGAPIXELS, "").strip()
    return check_megapixels(value, f"${ENV_MAX_IMAGE_MEGAPIXELS}") if value else DEFAULT_MAX_IMAGE_MEGAPIXELS


@contextlib.contextmanager
def image_limit(megapixels: float | None) -> Iterator[None]:
    """Within the block, images of more than ``megapixels`` are refused (None: leave the limit as it is).

    The limit is passed on as ``$NAFRESTORE_MAX_IMAGE_MEGAPIXELS``, so that the processes started inside the block
    (DataLoader workers, ``prepare``'s shard writers) apply it too; the variable is restored afterwards.

    Raises:
        ConfigError: ``megapixels`` (or, when it is None, the variable) is not a positive number: said once, before
            any image is read, rather than for every file.
    """
    if megapixels is None:
        max_image_megapixels()
        yield
        return
    value = repr(check_megapixels(megapixels, LIMIT_OPTION))
    saved = os.environ.get(ENV_MAX_IMAGE_MEGAPIXELS)
    os.environ[ENV_MAX_IMAGE_MEGAPIXELS] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(ENV_MAX_IMAGE_MEGAPIXELS, None)
        else:
            os.environ[ENV_MAX_IMAGE_MEGAPIXELS] = saved


def check_image_pixels(source: str | Path, height: int, width: int) -> None:
    """Refuses an image of ``height`` x ``width`` pixels (from its header) above the limit.

    Raises:
        ImageTooLargeError: naming ``source`` (the file), its size and megapixels, and how to raise the limit.
    """
    limit = max_image_megapixels()
    megapixels = height * width / 1e6
    if megapixels <= limit:
        return
    raise ImageTooLargeError(
        f"Image file {source} is {width}x{height} pixels ({megapixels:.4g} megapixels), more than the limit of "
        f"{limit:g} megapixels, so it was not decoded: the limit guards against decompression bombs, small files "
        f"that decode to enough pixels to exhaust the memory. If the image is genuine, raise the limit with "
        f"{LIMIT_OPTION} {math.ceil(megapixels)} or {ENV_MAX_IMAGE_MEGAPIXELS}={math.ceil(megapixels)}."
    )
