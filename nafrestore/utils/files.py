"""Writing files so that a crash never leaves a half-written file under the final name.

Every output of nafrestore (images, checkpoints, exports, metrics files, figures) goes through
:func:`atomic_path` or :func:`atomic_write`: the data goes to a hidden temporary file beside the target
(``.NAME.XXXX.tmp``, so a leftover is never taken for an image), which is renamed over the target only when
writing succeeded. ``os.replace`` is atomic within one file system, so readers see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (e.g. ``torch.onnx.export``).

    On success the temporary file is renamed over ``path`` and the folder entry is synced; on any error it is
    removed and ``path`` is left as it was. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """An open file that replaces ``path`` when the block ends without error (flushed and fsync'ed first).

    Args:
        path: the final file.
        mode: ``"wb"`` or ``"w"``.
        **open_kwargs: passed to ``open`` (e.g. ``encoding="utf-8"``, ``newline=""`` for CSV).
    """
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), where it is skipped.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
