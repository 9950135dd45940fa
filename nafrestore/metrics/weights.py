"""Pretrained weights of the metric networks: lookup, download, sha256 verification, loading.

The LPIPS backbones (torchvision's ImageNet AlexNet / VGG16) and the FID Inception network are read from a local
file, searched in this order:

1. the explicit ``weights_dir`` argument (the ``--weights-dir`` option / config key),
2. the directory in the environment variable ``NAFRESTORE_WEIGHTS_DIR``,
3. the torch hub cache, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``), where torchvision,
   lpips and pytorch-fid would have put them.

The first directory that holds the file wins. The file's sha256 must start with the 8-hex prefix in its name (the
torchvision convention) and equal the published full hash; a file that fails is an error, never silently skipped,
because a corrupt or foreign network gives plausible-looking but wrong scores. Hashes are cached per
(path, mtime, size) so that a 528 MB VGG file is hashed once per process.

A file in none of them is downloaded from its official URL (or a mirror of ``$NAFRESTORE_MIRROR``) into the first
of those folders by :func:`nafrestore.hub.fetch` (progress bar, sha256 check, temporary name until complete),
unless nafrestore is offline (``$NAFRESTORE_OFFLINE=1``, ``--offline``): then one message says which file to put
where.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nafrestore.errors import DownloadError, WeightsError
from nafrestore.hub import RemoteFile, fetch, file_sha256, hub_checkpoint_dir, unique_dirs

ENV_VAR = "NAFRESTORE_WEIGHTS_DIR"


@dataclass(frozen=True)
class WeightsFile:
    """A known pretrained weights file.

    Attributes:
        name: the file name, as published (ends in ``-<first 8 hex digits of its sha256>.pth``).
        url: where the official file is published.
        purpose: what it is used for, shown by ``weights_status``.
        sha256: the published full sha256, or None where only the name prefix is known.
    """

    name: str
    url: str
    purpose: str
    sha256: str | None = None

    @property
    def sha256_prefix(self) -> str | None:
        return name_hash_prefix(self.name)

    @property
    def remote(self) -> RemoteFile | None:
        """The file as :func:`nafrestore.hub.fetch` downloads it (None without a full hash: not downloadable)."""
        if self.sha256 is None:
            return None
        return RemoteFile(self.name, self.sha256, (self.url,), what=self.purpose)


# The full hashes agree with the 8-hex prefixes the upstream projects put in the names (torchvision and pytorch-fid
# name their files after the start of the sha256).
KNOWN_WEIGHTS: dict[str, WeightsFile] = {
    w.name: w
    for w in (
        WeightsFile(
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "LPIPS backbone (net='alex'): torchvision ImageNet AlexNet",
            "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
        ),
        WeightsFile(
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "LPIPS backbone (net='vgg'): torchvision ImageNet VGG16",
            "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        ),
        WeightsFile(
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "rFID / KID: pytorch-fid's port of the TensorFlow FID Inception-v3",
            "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        ),
    )
}

_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


def name_hash_prefix(filename: str) -> str | None:
    """The hex sha256 prefix in a file name such as ``vgg16-397923af.pth`` (``'397923af'``), or None."""
    m = _NAME_HASH.search(filename)
    return m.group(1) if m else None


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The folders searched for weights, in order, each with where it comes from (for messages)."""
    dirs: list[tuple[Path, str]] = []
    if weights_dir is not None and str(weights_dir) != "":
        dirs.append((Path(weights_dir).expanduser(), "weights_dir argument"))
    env = os.environ.get(ENV_VAR, "")
    if env:
        dirs.append((Path(env).expanduser(), f"${ENV_VAR}"))
    dirs.append((hub_checkpoint_dir(), "torch hub cache"))
    return unique_dirs(dirs)


def verify_weights_file(path: str | os.PathLike, sha256: str | None = None) -> bool:
    """Whether a file's sha256 matches the hex prefix in its name and, if given, the full ``sha256``.

    A file whose name carries no hash prefix and that has no known full hash cannot be verified: False.
    """
    p = Path(path)
    prefix = name_hash_prefix(p.name)
    if prefix is None and sha256 is None:
        return False
    digest = file_sha256(p)
    if prefix is not None and not digest.startswith(prefix.lower()):
        return False
    return sha256 is None or digest == sha256.lower()


def _spec(name: str) -> WeightsFile:
    if name not in KNOWN_WEIGHTS:
        raise KeyError(f"unknown weights file {name!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))}")
    return KNOWN_WEIGHTS[name]


def find_weights(name: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The first existing ``<dir>/<name>`` over :func:`search_dirs`, or None. Does not verify."""
    for d, _ in search_dirs(weights_dir):
        candidate = d / name
        if candidate.is_file():
            return candidate
    return None


def resolve_weights(name: str, weights_dir: str | os.PathLike | None = None, *, verify: bool = True) -> Path:
    """Path of the known weights file ``name``, found and (unless ``verify=False``) sha256-verified.

    Args:
        name: a key of :data:`KNOWN_WEIGHTS`, e.g. ``"alexnet-owt-7be5be79.pth"``.
        weights_dir: folder searched first (see the module docstring for the full order).
        verify: check the sha256. ``False`` is an escape hatch for tests and experiments with weights that are
            not the published ones; scores computed with such weights are not comparable with published ones.

    Raises:
        WeightsError: the file is in none of the folders and cannot be downloaded (offline, no network, ...; the
            message names the file, its URLs and where to put it by hand), or fails the checksum.
    """
    spec = _spec(name)
    dirs = search_dirs(weights_dir)
    path = find_weights(name, weights_dir)
    if path is None:
        return _download(spec, dirs)
    if verify and not verify_weights_file(path, spec.sha256):
        digest = file_sha256(path)
        expected = spec.sha256 or f"{spec.sha256_prefix}..."
        searched = "; ".join(f"{d} ({why})" for d, why in dirs)
        raise WeightsError(
            f"The weights file {path} fails its checksum: its sha256 is {digest}, expected {expected}. It is "
            f"truncated, corrupt or not the official {spec.purpose} file. Delete it and run again to download it "
            f"afresh, or download it by hand from {spec.url} into {path.parent}. Searched, in order: {searched}."
        )
    return path


def _download(spec: WeightsFile, dirs: list[tuple[Path, str]]) -> Path:
    """Fetch a missing file into the first search folder (see :func:`nafrestore.hub.fetch`)."""
    remote = spec.remote
    if remote is None:
        searched = "; ".join(f"{d} ({why})" for d, why in dirs)
        raise WeightsError(
            f"The weights file {spec.name!r} ({spec.purpose}) was not found and has no known sha256 to download it "
            f"with. Download it from {spec.url} into {dirs[0][0]}. Searched, in order: {searched}."
        )
    try:
        return fetch(remote, dirs)
    except DownloadError as exc:
        raise WeightsError(str(exc)) from None


def weights_status(weights_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The state of every known weights file, for a ``nafrestore weights`` command.

    Returns:
        one dict per file with ``name``, ``purpose``, ``url``, ``path`` (the file found, or None) and ``status``:
        ``'verified'``, ``'missing'`` or ``'checksum mismatch'``.
    """
    rows = []
    for name, spec in KNOWN_WEIGHTS.items():
        path = find_weights(name, weights_dir)
        if path is None:
            status = "missing"
        else:
            status = "verified" if verify_weights_file(path, spec.sha256) else "checksum mismatch"
        rows.append(
            {
                "name": name,
                "purpose": spec.purpose,
                "url": spec.url,
                "path": str(path) if path is not None else None,
                "status": status,
            }
        )
    return rows


def read_weights_file(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` a state dict safely (``weights_only``) on the CPU; unreadable files raise WeightsError."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure here means an unusable file, reported as such
        raise WeightsError(
            f"The weights file {path} cannot be read ({type(exc).__name__}: {exc}). Delete it and download it again."
        ) from exc
    if not isinstance(obj, dict):
        raise WeightsError(f"The weights file {path} holds a {type(obj).__name__}, not a state dict.")
    return obj
