"""Files fetched by name: looked for in the caches, else downloaded once (with a progress bar), sha256-checked and
renamed into place; usable offline afterwards.

The registry's pretrained models (:mod:`nafrestore.models.pretrained`) and the metric networks' weights
(:mod:`nafrestore.metrics.weights`) are :class:`RemoteFile` s: a file name, its sha256, its size where known and the
URLs it is published at. :func:`fetch` returns a local, verified copy:

1. Each folder of the search list is looked in, in order (for models: ``$NAFRESTORE_HOME``, by default
   ``~/.cache/nafrestore``, then the torch hub cache ``torch.hub.get_dir()/checkpoints``). A file found there,
   whether downloaded earlier or put there by hand, is checked against the sha256 and used; one that fails is an
   error naming both hashes (never silently replaced: it may be someone's own file).
2. Offline (``$NAFRESTORE_OFFLINE=1``, ``--offline``, :func:`options`), nothing connects anywhere: one message names
   the file, its URLs and the folder to put it in by hand.
3. Otherwise it is downloaded into the first folder of the list, as ``NAME.partial``, with a tqdm progress bar,
   from each URL in turn (the mirrors of ``$NAFRESTORE_MIRROR`` first) until one gives the right bytes; the sha256
   is computed while the bytes arrive, and the file is renamed to ``NAME`` only when size and hash are right. A
   transfer cut short leaves the ``.partial`` file, which no lookup takes for the finished file; the next call
   continues it with an HTTP ``Range`` request (or starts over when the server does not support ranges). A file
   whose hash is wrong is deleted, and the message names the expected and actual hashes and the URL.

Why urllib and not ``torch.hub.download_url_to_file`` (which also writes a temporary file, shows a progress bar
and checks a hash prefix): it cannot continue an interrupted download, and a connection that closes early makes
``http.client`` return a short body without an error, so a cut transfer surfaces only as a hash mismatch; here the
byte count is compared with ``Content-Length`` (so the message says what happened), a retry resumes, each URL's
failure (HTTP status, refused connection, timeout) is reported in words, and the downloaded file is hashed while
it arrives instead of read a second time. ``requests`` would add a dependency for no gain.

Concurrent downloads of one file (e.g. every process of ``torchrun``) are serialised by an advisory lock on the
``.partial`` file (POSIX ``flock``; without it, on Windows, each process downloads on its own and the renames are
still atomic); the processes that waited find the finished file.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import http.client
import os
import re
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch.hub
from tqdm import tqdm

from .errors import ChecksumError, DownloadError
from .utils.files import HAS_FILE_LOCKS, lock_exclusive, make_folder, output_error, publish

__all__ = [
    "ENV_HOME",
    "ENV_MIRROR",
    "ENV_OFFLINE",
    "ChecksumError",
    "DownloadError",
    "RemoteFile",
    "cache_dir",
    "default_dirs",
    "fetch",
    "file_sha256",
    "file_urls",
    "find_file",
    "hub_checkpoint_dir",
    "is_offline",
    "mirrors",
    "options",
    "verify_file",
]

ENV_HOME = "NAFRESTORE_HOME"
ENV_OFFLINE = "NAFRESTORE_OFFLINE"
ENV_MIRROR = "NAFRESTORE_MIRROR"
#: Seconds without data before a connection is given up (``urlopen``'s socket timeout).
TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")

_OFFLINE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("nafrestore_offline", default=None)
_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("nafrestore_progress", default=True)
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


@dataclass(frozen=True)
class RemoteFile:
    """A published file that :func:`fetch` can download.

    Attributes:
        name: the file name, in the cache and at the end of each URL.
        sha256: its full hex sha256 (what makes any mirror trustworthy).
        urls: where it is published, tried in order after the mirrors of ``$NAFRESTORE_MIRROR``.
        size: its size in bytes, where known (checked before hashing).
        what: what it is, for messages (e.g. ``"the model nafnet-sidd-width32"``).
    """

    name: str
    sha256: str
    urls: tuple[str, ...]
    size: int | None = None
    what: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} ({self.what})" if self.what else self.name


# ------------------------------------------------------------------------------------------------------------
# Settings


def is_offline(offline: bool | None = None) -> bool:
    """Whether downloads are off: ``offline`` if given, else :func:`options`'s setting, else ``$NAFRESTORE_OFFLINE``."""
    if offline is not None:
        return offline
    forced = _OFFLINE.get()
    if forced is not None:
        return forced
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in _TRUE


@contextlib.contextmanager
def options(*, offline: bool | None = None, progress: bool | None = None) -> Iterator[None]:
    """Within the block: ``offline=True`` forbids downloads (False allows them whatever ``$NAFRESTORE_OFFLINE``
    says; None leaves it to the variable), ``progress`` shows or hides download progress bars. The CLI's
    ``--offline`` and ``--quiet`` set these."""
    tokens = []
    if offline is not None:
        tokens.append((_OFFLINE, _OFFLINE.set(offline)))
    if progress is not None:
        tokens.append((_PROGRESS, _PROGRESS.set(progress)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)  # type: ignore[attr-defined]


def cache_dir() -> Path:
    """nafrestore's download folder: ``$NAFRESTORE_HOME``, else ``$XDG_CACHE_HOME/nafrestore``, else
    ``~/.cache/nafrestore``."""
    home = os.environ.get(ENV_HOME, "")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "nafrestore"


def hub_checkpoint_dir() -> Path:
    """The torch hub cache folder for weights, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_dirs() -> list[tuple[Path, str]]:
    """Where models are looked for, in order, each with where it comes from: nafrestore's cache (downloads go
    there), then the torch hub cache."""
    why = f"${ENV_HOME}" if os.environ.get(ENV_HOME) else "nafrestore cache"
    return unique_dirs([(cache_dir(), why), (hub_checkpoint_dir(), "torch hub cache")])


def unique_dirs(dirs: Sequence[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """``dirs`` without repeats of the same folder (the first mention kept)."""
    seen: set[str] = set()
    out = []
    for folder, why in dirs:
        key = os.path.abspath(folder)
        if key not in seen:
            seen.add(key)
            out.append((Path(folder), why))
    return out


def mirrors() -> list[str]:
    """The base URLs of ``$NAFRESTORE_MIRROR`` (separated by spaces, commas or semicolons), in order."""
    return [m.rstrip("/") for m in re.split(r"[\s,;]+", os.environ.get(ENV_MIRROR, "")) if m]


def file_urls(file: RemoteFile) -> list[str]:
    """The URLs tried for ``file``: ``<mirror>/<name>`` for each mirror of ``$NAFRESTORE_MIRROR``, then its own."""
    urls = [f"{m}/{file.name}" for m in mirrors()] + list(file.urls)
    return list(dict.fromkeys(urls))


# ------------------------------------------------------------------------------------------------------------
# Hashes


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, cached per (absolute path, mtime_ns, size) so big files are hashed once per process."""
    p = Path(path)
    st = p.stat()
    key = (os.path.abspath(p), st.st_mtime_ns, st.st_size)
    with _HASH_LOCK:
        cached = _HASH_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _remember_hash(p, digest)
    return digest


def _remember_hash(path: Path, digest: str) -> None:
    st = path.stat()
    with _HASH_LOCK:
        _HASH_CACHE[(os.path.abspath(path), st.st_mtime_ns, st.st_size)] = digest


def verify_file(path: str | os.PathLike, file: RemoteFile) -> str | None:
    """None when ``path`` is ``file`` (size, where known, and sha256); else why not, in words."""
    path = Path(path)
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        return f"it has {size:,} bytes, not {file.size:,}"
    digest = file_sha256(path)
    if digest != file.sha256.lower():
        return f"its sha256 is {digest}, expected {file.sha256}"
    return None


# ------------------------------------------------------------------------------------------------------------
# Lookup and download


def find_file(name: str, dirs: Sequence[tuple[Path, str]]) -> Path | None:
    """The first existing ``<dir>/<name>`` over ``dirs``, or None. Does not verify."""
    for folder, _ in dirs:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def fetch(
    file: RemoteFile,
    dirs: Sequence[tuple[Path, str]] | None = None,
    *,
    offline: bool | None = None,
    progress: bool | None = None,
) -> Path:
    """A verified local copy of ``file``: found in ``dirs`` or downloaded into the first of them.

    Args:
        file: what to fetch.
        dirs: the folders looked in, in order, each with where it comes from (for messages); downloads go into the
            first. Default: :func:`default_dirs`.
        offline: True never connects (see :func:`is_offline` for the default).
        progress: show a progress bar on stderr (default: on, unless :func:`options` says otherwise).

    Raises:
        ChecksumError: a file found in ``dirs`` does not have the published hash (it is left there), or every URL
            gave a file with the wrong hash (each deleted).
        DownloadError: missing and offline, or no URL could be downloaded (404, refused connection, no network,
            a cut transfer); one message naming the file, the URLs and the folder to put it in by hand.
        OutputError: the download folder cannot be written.
    """
    dirs = unique_dirs(list(dirs) if dirs is not None else default_dirs())
    found = find_file(file.name, dirs)
    if found is not None:
        _check_found(found, file, dirs)
        return found
    if is_offline(offline):
        raise DownloadError(
            f"{file.label} is not downloaded yet and nafrestore is offline (${ENV_OFFLINE}=1 or --offline), so "
            f"nothing was fetched. " + _by_hand(file, dirs)
        )
    return _download(file, Path(dirs[0][0]) / file.name, dirs, _PROGRESS.get() if progress is None else progress)


def _check_found(path: Path, file: RemoteFile, dirs: Sequence[tuple[Path, str]]) -> None:
    problem = verify_file(path, file)
    if problem is not None:
        raise ChecksumError(
            f"{path} is not the published {file.label}: {problem}. It is truncated, corrupt or another file. Delete "
            f"it and run again to download it afresh, or replace it by hand with the file from "
            f"{' or '.join(file_urls(file))}."
        )


def _by_hand(file: RemoteFile, dirs: Sequence[tuple[Path, str]]) -> str:
    target = Path(dirs[0][0]) / file.name
    urls = file_urls(file)
    searched = "; ".join(f"{d} ({why})" for d, why in dirs)
    return (
        f"Download it by hand from {' or '.join(urls)} (e.g. `curl -L -o {target} {urls[0]}`) and put it in "
        f"{dirs[0][0]} as {file.name}; it is checked against its sha256 {file.sha256} before use. Searched, in "
        f"order: {searched}. To download from elsewhere, set ${ENV_MIRROR} to base URLs that serve {file.name}."
    )


class _Failed(Exception):
    """One URL did not give the file (the message says why, in words)."""

    def __init__(self, message: str, *, checksum: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.checksum, self.status = checksum, status


def _download(file: RemoteFile, target: Path, dirs: Sequence[tuple[Path, str]], progress: bool) -> Path:
    make_folder(target.parent)
    partial = target.with_name(target.name + ".partial")
    with _locked(partial) as waited:
        try:
            if waited and target.is_file():  # another process finished it while this one waited
                _check_found(target, file, dirs)
                return target
            failures = _try_urls(file, target, partial, progress)
            if not failures:
                return target
        finally:
            with contextlib.suppress(OSError):  # under the lock, so no other process is writing it
                if partial.stat().st_size == 0:
                    partial.unlink()  # nothing to continue from: leave nothing behind
    reasons = "; ".join(str(f) for f in failures)
    cls = ChecksumError if all(f.checksum for f in failures) else DownloadError
    kept = f" The partial download {partial} is kept and continued next time." if partial.exists() else ""
    raise cls(f"Could not download {file.label}: {reasons}.{kept} " + _by_hand(file, dirs))


def _try_urls(file: RemoteFile, target: Path, partial: Path, progress: bool) -> list[_Failed]:
    """Each URL in turn until one gives the file, which is then renamed to ``target``; the failures ([] when done)."""
    failures: list[_Failed] = []
    for url in file_urls(file):
        if progress:
            print(f"downloading {url} to {target.parent}", file=sys.stderr)
        try:
            _download_from(url, file, partial, progress)
        except _Failed as exc:
            failures.append(_Failed(f"{url}: {exc}", checksum=exc.checksum))
            continue
        except OSError as exc:  # writing the partial file: disk full, permissions
            raise output_error(partial, exc) from exc
        publish(partial, target)
        _remember_hash(target, file.sha256.lower())
        return []
    return failures


def _download_from(url: str, file: RemoteFile, partial: Path, progress: bool) -> None:
    """``url`` into ``partial`` (continued if it holds a beginning), then checked; raises :class:`_Failed`."""
    start = _resumable_bytes(partial, file)
    try:
        _transfer(url, file, partial, start, progress)
    except _Failed as exc:
        if start == 0 or not (exc.checksum or exc.status == 416):
            raise
        # The bytes kept from an earlier attempt were the wrong ones, or the server cannot continue after them
        # (416: range not satisfiable): start over once.
        _transfer(url, file, partial, 0, progress)


def _resumable_bytes(partial: Path, file: RemoteFile) -> int:
    """How many bytes of an earlier attempt can be kept (0: start over)."""
    try:
        size = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if file.size is not None and size > file.size:
        return 0
    return size


def _transfer(url: str, file: RemoteFile, partial: Path, start: int, progress: bool) -> None:
    """One request: the file from byte ``start`` (a Range request) appended to ``partial``, then size and hash
    checked; a wrong file is deleted."""
    digest = hashlib.sha256()
    if start:
        with open(partial, "rb") as f:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                digest.update(chunk)
    if file.size is not None and start == file.size:
        received = start  # complete already: only the check is left
    else:
        response = _open(url, start)
        with response:
            status = response.getcode()
            if start and status != 206:  # the server sent the whole file: start over
                start, digest = 0, hashlib.sha256()
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None and length.isdigit() else file.size
            with open(partial, "r+b" if start else "wb") as out:
                out.seek(start)
                out.truncate()
                received = _copy(response, out, digest, start, total, file.name, progress)
        if total is not None and received < total:
            raise _Failed(f"the connection was closed after {received:,} of {total:,} bytes")
    problem = None
    if file.size is not None and received != file.size:
        problem = f"it has {received:,} bytes, not {file.size:,}"
    elif digest.hexdigest() != file.sha256.lower():
        problem = f"its sha256 is {digest.hexdigest()}, expected {file.sha256}"
    if problem is not None:
        partial.unlink(missing_ok=True)
        raise _Failed(f"the downloaded file is not the published one ({problem}), so it was deleted", checksum=True)


def _open(url: str, start: int) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "nafrestore"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (http/https/file URLs by design)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise _Failed(f"HTTP {exc.code} {exc.reason}", status=exc.code) from None
    except urllib.error.URLError as exc:
        raise _Failed(f"cannot connect ({_reason(exc.reason)})") from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # timeouts, resets, malformed URLs
        raise _Failed(f"cannot connect ({_reason(exc)})") from None


def _copy(response: Any, out: IO[bytes], digest: Any, start: int, total: int | None, name: str, progress: bool) -> int:
    """Stream the body into ``out`` with a progress bar; the number of bytes the file holds afterwards.

    Each read takes what has arrived (``read1``), not a whole chunk (``read(n)`` waits for ``n`` bytes): when the
    transfer stalls, everything received before is written, counted in the message and continued next time.
    """
    received = start
    with tqdm(
        total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress,
        file=sys.stderr, leave=False,
    ) as bar:  # fmt: skip
        while True:
            try:
                chunk = response.read1(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
                of = f" of {total:,}" if total is not None else ""
                raise _Failed(f"the transfer broke off after {received:,}{of} bytes ({_reason(exc)})") from None
            if not chunk:
                return received
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))


def _reason(reason: object) -> str:
    text = str(reason).strip() or type(reason).__name__
    return text.splitlines()[0][:200]


@contextlib.contextmanager
def _locked(partial: Path) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``partial`` (created empty if missing); yields whether it had to wait for
    another process. A process that waited while the holder renamed or deleted the file locks the new one."""
    if not HAS_FILE_LOCKS:  # pragma: no cover - Windows
        yield False
        return
    waited = False

    def wait() -> None:
        nonlocal waited
        waited = True
        print(f"waiting for another process that downloads {partial.name[: -len('.partial')]}", file=sys.stderr)

    fd = lock_exclusive(partial, on_busy=wait)
    assert fd is not None  # it waits for a busy lock
    try:
        yield waited
    finally:
        os.close(fd)
