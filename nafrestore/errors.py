"""User-facing errors.

Anything a user can cause (a bad config key, a missing file, a checkpoint for another model) raises a
subclass of :class:`NafrestoreError` with a one-paragraph message that names the file or key and says what to
do. The CLI prints the message without a traceback and exits with the error's ``exit_code`` (2 when it has none);
programming errors keep their tracebacks.
"""


class NafrestoreError(Exception):
    """Base class of the errors a user can fix; the message is shown as it is."""


class ConfigError(NafrestoreError):
    """A config file or override is malformed, misspelt or out of range."""


class DataError(NafrestoreError):
    """A dataset or image file cannot be read or does not match its pair."""


class ImageTooLargeError(DataError):
    """An image file's header declares more pixels than nafrestore decodes (see :mod:`nafrestore.utils.limits`);
    it was refused before any pixel was decoded."""


class CheckpointError(NafrestoreError):
    """A checkpoint or weights file cannot be loaded into the requested model."""


class WeightsError(NafrestoreError):
    """A pretrained network's weights file (LPIPS, FID Inception) is missing or corrupt."""


class DownloadError(NafrestoreError):
    """A file that is fetched by name (a pretrained model, a metric network's weights) is missing and cannot be
    downloaded: offline, no network, HTTP errors, a transfer cut short (see :mod:`nafrestore.hub`)."""


class ChecksumError(DownloadError):
    """A cached or downloaded file does not have its published sha256."""


class OutputError(NafrestoreError):
    """An output file (image, checkpoint, export, metrics, figure) cannot be written: no permission, no space left,
    a read-only file system, a file where a folder should be. Nothing replaced the previous file and no temporary
    file was left behind (see :mod:`nafrestore.utils.files`).

    Attributes:
        path: the file that was to be written (set by :mod:`nafrestore.utils.files`; None otherwise).
    """

    exit_code = 1
    # A class attribute rather than an __init__ argument: OutputExistsError is also an OSError, whose constructor
    # reads a second positional argument as strerror.
    path: object = None


class OutputExistsError(OutputError, FileExistsError):
    """An exclusive write (``exclusive=True``) found its target already there; the existing file is untouched.

    Also a :class:`FileExistsError`, so callers that skip existing outputs can catch that.
    """


class ImageWriteError(OutputError, DataError):
    """An image file cannot be written: an :class:`OutputError` that is also the :class:`DataError` that
    :func:`nafrestore.data.io.save_image` documents for unwritable files."""


class ImageArrayError(DataError, ValueError):
    """An image array given to the Python API (:func:`nafrestore.restore`) has an unsupported dtype or shape, no
    pixels, or values it would silently change: NaN or infinite samples, floats outside [0, 1]. Also a
    :class:`ValueError`, what the API raised for bad arrays before."""
