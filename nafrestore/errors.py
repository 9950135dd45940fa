"""User-facing errors.

Anything a user can cause (a bad config key, a missing file, a checkpoint for another model) raises a
subclass of :class:`NafrestoreError` with a one-paragraph message that names the file or key and says what to
do. The CLI prints the message without a traceback and exits with code 2; programming errors keep their
tracebacks.
"""


class NafrestoreError(Exception):
    """Base class of the errors a user can fix; the message is shown as it is."""


class ConfigError(NafrestoreError):
    """A config file or override is malformed, misspelt or out of range."""


class DataError(NafrestoreError):
    """A dataset or image file cannot be read or does not match its pair."""


class CheckpointError(NafrestoreError):
    """A checkpoint or weights file cannot be loaded into the requested model."""


class WeightsError(NafrestoreError):
    """A pretrained network's weights file (LPIPS, FID Inception) is missing or corrupt."""
