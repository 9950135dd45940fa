"""Writing files so that a crash never leaves a half-written file under the final name.

Every output of nafrestore (images, checkpoints, exports, metrics files, figures) goes through
:func:`atomic_path` or :func:`atomic_write`: the data goes to a hidden temporary file beside the target
(``.NAME.XXXXXXXX.tmp``, so a leftover is never taken for an image), which is renamed over the target only when
writing succeeded. ``os.replace`` is atomic within one file system, so readers see the old file or the new one.

- The finished file has the permissions a plain ``open(path, "w")`` would give it: those of the file it replaces,
  else ``0o666`` less the umask.
- A failed write (no permission, disk full, read-only file system, a file where a folder should be) raises one
  :class:`~nafrestore.errors.OutputError` naming the file and the reason; the previous file is untouched and the
  temporary file is removed.
- ``exclusive=True`` never replaces an existing file (:class:`~nafrestore.errors.OutputExistsError`).
- A process killed while writing leaves its temporary file behind; :func:`remove_stale_temporaries` removes
  those of one target (the training loop calls it for its checkpoints when a run starts or resumes).
- Several processes that may write the same files (two ``infer`` runs into one folder) take an
  :class:`OutputClaim` on a file before computing it: one process computes each file, and a claimed target's
  leftovers can be removed safely (no live writer of it is left). :func:`targets_with_leftovers` finds, in one
  scan of a folder, the targets that have any. :func:`lock_exclusive` is the lock beneath (also serialising
  downloads in :mod:`nafrestore.hub`).

A file appended to line by line (a run's ``metrics.jsonl``) can still end in a line cut by a kill:
:func:`read_metrics` skips it. The training loop writes that file and reads it back on resume; the report reads it
for a run's curves.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError, OutputExistsError

try:  # POSIX advisory locks; on Windows claims are not taken (each process computes every file, as before)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HAS_FILE_LOCKS",
    "OutputClaim",
    "atomic_path",
    "atomic_write",
    "lock_exclusive",
    "output_error",
    "publish",
    "read_metrics",
    "remove_stale_temporaries",
    "targets_with_leftovers",
]

# os.link errors that mean "this file system has no hard links" (FAT/exFAT, some network and FUSE mounts).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS})
# The random part of a temporary name: 8 hex digits here; tempfile.mkstemp's 8 of [a-z0-9_] in older versions.
_RANDOM_PART = r"[a-z0-9_]{8}"


@contextlib.contextmanager
def atomic_path(path: str | Path, *, exclusive: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (e.g. ``torch.onnx.export``).

    The temporary file exists (empty) when the block starts; the writer may overwrite or recreate it. On success it
    gets the mode of the file it replaces (else ``0o666`` less the umask), is renamed over ``path`` and the folder
    entry is synced; on any error it is removed and ``path`` is left as it was. Parent folders are created.

    Args:
        path: the final file.
        exclusive: never replace an existing ``path``: the finished file is hard-linked to ``path``, which fails
            atomically when ``path`` exists (on file systems without hard links: an existence check, then a
            rename, which leaves a short window in which a concurrent writer's file could be replaced).

    Raises:
        OutputError: the folder cannot be created or written, the disk is full, ... (an ``OSError`` from the
            block that concerns the temporary file, or has no file name, is turned into this error too).
        OutputExistsError: ``exclusive`` and ``path`` exists; also a ``FileExistsError``.
    """
    path = Path(path)
    _make_parent(path)
    tmp = _create_temporary(path)
    try:
        try:
            yield tmp
        except OSError as exc:
            if isinstance(exc, OutputError) or not _concerns(exc, tmp):
                raise
            raise output_error(path, exc) from exc
        _publish(tmp, path, exclusive)
    finally:
        with contextlib.suppress(OSError):  # never hide the error being raised behind a failed clean-up
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(
    path: str | Path, mode: str = "wb", *, exclusive: bool = False, **open_kwargs: Any
) -> Iterator[IO[Any]]:
    """An open file that replaces ``path`` when the block ends without error (flushed and fsync'ed first).

    Args:
        path: the final file.
        mode: ``"wb"`` or ``"w"``.
        exclusive: never replace an existing ``path`` (see :func:`atomic_path`).
        **open_kwargs: passed to ``open`` (e.g. ``encoding="utf-8"``, ``newline=""`` for CSV).

    Raises:
        OutputError: the file cannot be written (see :func:`atomic_path`); the previous file is unchanged.
        OutputExistsError: ``exclusive`` and ``path`` exists.
    """
    with atomic_path(path, exclusive=exclusive) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def publish(tmp: str | Path, path: str | Path) -> None:
    """Put a finished temporary file in place of ``path`` (the last step of :func:`atomic_path`), for writers that
    need a stable temporary name of their own, e.g. a resumable download (``NAME.partial``, see
    :mod:`nafrestore.hub`): the mode a plain ``open`` would give, an atomic rename, the folder entry synced.

    Raises:
        OutputError: the rename failed; ``tmp`` is left as it was.
    """
    _publish(Path(tmp), Path(path), exclusive=False)


def remove_stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Remove the temporary files that writes of ``folder/name`` left behind when their process was killed.

    Matches ``.NAME.XXXXXXXX.tmp`` (and side files a writer added to it, ``.NAME.XXXXXXXX.tmp.*``) and nothing
    else: not other targets' temporaries, not ``name`` itself. Call it only while no other process writes that
    target (e.g. for ``checkpoints/last.pt`` when a training run starts or resumes): a write in progress would
    lose its temporary file.

    Args:
        folder: the target's folder (a missing folder has nothing to remove).
        name: the target's file name, e.g. ``"last.pt"``.

    Returns:
        The removed files.
    """
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"name must be a file name without folders, got {name!r}")
    pattern = re.compile(rf"\.{re.escape(name)}\.{_RANDOM_PART}\.tmp(\..+)?", re.DOTALL)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: fine
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def targets_with_leftovers(folder: str | Path) -> set[str]:
    """The names of the targets in ``folder`` that have a leftover temporary file (``.NAME.XXXXXXXX.tmp``, see
    :func:`remove_stale_temporaries`) or claim file (``.NAME.lock``, see :class:`OutputClaim`): one scan of the
    folder, so that a batch of many files looks for leftovers once rather than once per file."""
    pattern = re.compile(rf"\.(.+)(?:\.{_RANDOM_PART}\.tmp(?:\..+)?|\.lock)", re.DOTALL)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return set()
    return {match.group(1) for entry in entries if (match := pattern.fullmatch(entry.name))}


#: Whether advisory file locks exist here (POSIX); without them (Windows) :func:`lock_exclusive` is not used.
HAS_FILE_LOCKS = fcntl is not None


def lock_exclusive(path: str | Path, on_busy: Callable[[], None] | None = None) -> int | None:
    """An exclusive advisory lock (``flock``) on ``path``, created empty if missing: the open file descriptor that
    holds it (closing it releases the lock, as does the end of the process, even by ``kill -9``).

    Args:
        path: the lock file.
        on_busy: called when another process holds the lock, which is then waited for; None: do not wait.

    Returns:
        The descriptor; None when another process holds the lock and ``on_busy`` is None. A lock taken on a file
        that its holder removed or replaced in the meantime is taken again on the file now at ``path``.

    Raises:
        OSError: the file cannot be created or opened.
    """
    assert fcntl is not None, "no advisory file locks on this platform (see HAS_FILE_LOCKS)"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_busy is None:
                    os.close(fd)
                    return None
                on_busy()
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder removed that file after we opened it: lock the one now at `path`


class OutputClaim:
    """An exclusive claim of this process on computing and writing one output file, among processes that claim it.

    The claim is an advisory lock (``flock``) on a hidden file beside the target, ``.NAME.lock``: the operating
    system releases it when the process ends, even on ``kill -9``, so a killed run never blocks a later one (its
    lock file stays, empty, until a later claim of the target removes it). :meth:`release` removes the lock file.
    Without POSIX locks (Windows) every claim succeeds.

    Example::

        claim = OutputClaim(out / "a.png")
        if claim.acquire():  # False: another live process is writing out/a.png now
            try:
                ...  # compute and write out/a.png
            finally:
                claim.release()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = self.path.with_name(f".{self.path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the claim without waiting; False when another process holds it. While it is held, the target's
        temporary files are leftovers of killed writers (:func:`remove_stale_temporaries` may remove them).

        Raises:
            OutputError: the folder cannot be created or written (naming the target).
        """
        if self._fd is not None:
            return True
        if not HAS_FILE_LOCKS:  # pragma: no cover - Windows
            return True
        _make_parent(self.path)
        try:
            self._fd = lock_exclusive(self.lock)
        except OSError as exc:
            raise output_error(self.path, exc) from exc
        return self._fd is not None

    def release(self) -> None:
        """Give the claim up and remove the lock file (while still holding it, so no one claims a removed file)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock)
        os.close(self._fd)
        self._fd = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; lines that are not a UTF-8 JSON object (one cut by a kill, bytes of
    another encoding, an edit) are skipped, each on its own: the values of a record are not checked."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_bytes().splitlines():  # bytes: one line in another encoding must not fail the others
        try:
            obj = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def make_folder(folder: str | Path) -> Path:
    """``mkdir -p folder``; a failure (no permission, a file in the way, a full disk) is one :class:`OutputError`
    naming the folder and the reason."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(folder, exc) from exc
    return folder


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path``: the file, the reason in words, what to do."""
    path = Path(path)
    reason, advice = _describe(path, exc)
    err = OutputError(f"Cannot write {path}: {reason}. {advice} The previous file, if any, is unchanged.")
    err.path = path
    return err


def _describe(path: Path, exc: OSError) -> tuple[str, str]:
    """(the reason in words, what to do) for an OSError met while writing ``path``."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"no permission to write in {path.parent}",
            "Check the folder's permissions, or choose an output folder you can write to.",
        )
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        what = "no space left on the device" if code == errno.ENOSPC else "the disk quota is exceeded"
        return what, "Free some space or choose an output folder on another disk, then run again."
    if code == errno.EROFS:
        return "the folder is on a read-only file system", "Choose an output folder on a writable disk."
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder", "Choose another output path, or move that file away."
    if code == errno.EISDIR or path.is_dir():
        return "a folder of that name exists", "Give a file name, not a folder."
    text = exc.strerror or (str(exc).strip().splitlines() or [""])[0] or type(exc).__name__
    return text[:200], "Check the output path and the disk, then run again."


def _concerns(exc: OSError, tmp: Path) -> bool:
    """Whether an OSError raised while writing is about the output: it names the temporary file (or a side file
    beside it), or names no file at all (``write``/``fsync`` on an open file). Errors about other files, e.g. an
    input the writer reads, keep their own type and message."""
    if exc.errno is None:
        return False  # not from the operating system (e.g. a library raising OSError("...") itself)
    if exc.filename is None:
        return True
    name = os.fsdecode(exc.filename) if isinstance(exc.filename, str | bytes) else ""
    return name.startswith(str(tmp))


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from exc


def _create_temporary(path: Path) -> Path:
    """An empty new file ``.NAME.XXXXXXXX.tmp`` beside ``path``, created with mode ``0o666`` (less the umask).

    Not ``tempfile.mkstemp``: it creates files with mode 0600, which the final file would then keep.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue  # another writer drew the same name
        except OSError as exc:
            raise output_error(path, exc) from exc
        os.close(fd)
        return tmp
    raise output_error(path, FileExistsError(errno.EEXIST, "no free temporary file name in the folder"))


def _publish(tmp: Path, path: Path, exclusive: bool) -> None:
    """Gives the finished ``tmp`` its final mode and puts it in place of ``path``."""
    try:
        _set_mode(tmp, path)
        if exclusive:
            _link_new(tmp, path)
        else:
            os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from exc
    _fsync_dir(path.parent)


def _set_mode(tmp: Path, path: Path) -> None:
    # A plain open(path, "w") keeps an existing file's mode, or creates it with 0o666 less the umask. The writer
    # may have recreated the temporary file with other permissions, so the mode is set explicitly in both cases.
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    with contextlib.suppress(OSError):  # file systems without Unix permissions (FAT, some mounts) refuse chmod
        os.chmod(tmp, mode)


def _umask() -> int:
    """The process umask. Read from /proc on Linux: os.umask can only be read by setting it, which would briefly
    change it for every thread of the process."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _link_new(tmp: Path, path: Path) -> None:
    """Puts ``tmp`` at ``path`` only if ``path`` does not exist (the temporary name is removed by the caller)."""
    try:
        os.link(tmp, path)  # atomic: fails with EEXIST if the target exists, whoever created it
        return
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    if os.path.lexists(path):
        raise _exists_error(path)
    os.replace(tmp, path)


def _exists_error(path: Path) -> OutputExistsError:
    err = OutputExistsError(
        f"Cannot write {path}: the file already exists (another run may have written it meanwhile) and this write "
        f"does not replace existing files; it was left unchanged. Remove it, or write to another folder."
    )
    err.errno, err.path = errno.EEXIST, path
    return err


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
