"""Pretrained-weights lookup, verification and download (nafrestore.metrics.weights): no real weights, and no network
beyond an HTTP server on 127.0.0.1 that a test starts itself."""

from __future__ import annotations

import hashlib
import importlib
import os

import pytest

from nafrestore.errors import NafrestoreError, WeightsError
from nafrestore.metrics import MetricSuite, weights_status
from nafrestore.metrics.weights import (
    ENV_VAR,
    KNOWN_WEIGHTS,
    WeightsFile,
    file_sha256,
    find_weights,
    name_hash_prefix,
    resolve_weights,
    search_dirs,
    verify_weights_file,
)

# `nafrestore.metrics.weights` as a module object (the package re-exports functions under the same names).
weights_mod = importlib.import_module("nafrestore.metrics.weights")
hub_mod = importlib.import_module("nafrestore.hub")  # where the hashing (and its cache) lives

ALEX = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def dirs(monkeypatch, tmp_path):
    """Three empty folders: an explicit weights_dir, $NAFRESTORE_WEIGHTS_DIR and the torch hub cache."""
    explicit, env, home = tmp_path / "explicit", tmp_path / "env", tmp_path / "torch_home"
    hub = home / "hub" / "checkpoints"
    for d in (explicit, env, hub):
        d.mkdir(parents=True)
    monkeypatch.setenv(ENV_VAR, str(env))
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("NAFRESTORE_OFFLINE", "1")  # a missing file is reported, not downloaded
    return explicit, env, hub


def write_named_by_hash(folder, stem: str, payload: bytes):
    """A file whose name carries the first 8 hex digits of its own sha256, as torchvision names its files."""
    digest = hashlib.sha256(payload).hexdigest()
    path = folder / f"{stem}-{digest[:8]}.pth"
    path.write_bytes(payload)
    return path, digest


def test_known_files_and_prefixes():
    assert set(KNOWN_WEIGHTS) == {ALEX, "vgg16-397923af.pth", "pt_inception-2015-12-05-6726825d.pth"}
    for name, spec in KNOWN_WEIGHTS.items():
        assert spec.sha256 is not None and spec.sha256.startswith(name_hash_prefix(name))
        assert spec.url.endswith("/" + name) and spec.url.startswith("https://")
    assert name_hash_prefix("pt_inception-2015-12-05-6726825d.pth") == "6726825d"
    assert name_hash_prefix("model.pth") is None


def test_search_order(dirs):
    explicit, env, hub = dirs
    assert [d for d, _ in search_dirs(explicit)] == [explicit, env, hub]
    assert [d for d, _ in search_dirs()] == [env, hub]
    for d in (hub, env, explicit):
        (d / ALEX).write_bytes(d.name.encode())
    assert find_weights(ALEX, explicit) == explicit / ALEX
    (explicit / ALEX).unlink()
    assert find_weights(ALEX, explicit) == env / ALEX
    (env / ALEX).unlink()
    assert find_weights(ALEX, explicit) == hub / ALEX


def test_missing_file_error_names_file_url_and_folders(dirs):
    explicit, env, hub = dirs
    with pytest.raises(WeightsError) as err:
        resolve_weights(ALEX, explicit)
    msg = str(err.value)
    assert isinstance(err.value, NafrestoreError)
    assert ALEX in msg and KNOWN_WEIGHTS[ALEX].url in msg
    for d in (explicit, env, hub):
        assert str(d) in msg
    assert "\n" not in msg  # one paragraph
    assert "offline" in msg


def test_checksum_mismatch(dirs):
    explicit, _, _ = dirs
    (explicit / ALEX).write_bytes(b"not the official AlexNet")
    with pytest.raises(WeightsError) as err:
        resolve_weights(ALEX, explicit)
    msg = str(err.value)
    assert "checksum" in msg and str(explicit / ALEX) in msg and KNOWN_WEIGHTS[ALEX].url in msg
    assert KNOWN_WEIGHTS[ALEX].sha256 in msg
    # the explicit escape hatch (tests, experiments) skips the check
    assert resolve_weights(ALEX, explicit, verify=False) == explicit / ALEX
    rows = {r["name"]: r for r in weights_status(explicit)}
    assert rows[ALEX]["status"] == "checksum mismatch" and rows[ALEX]["path"] == str(explicit / ALEX)
    assert rows["vgg16-397923af.pth"] == {
        "name": "vgg16-397923af.pth",
        "purpose": KNOWN_WEIGHTS["vgg16-397923af.pth"].purpose,
        "url": KNOWN_WEIGHTS["vgg16-397923af.pth"].url,
        "path": None,
        "status": "missing",
    }


def test_verified_file_and_hash_cache(dirs, monkeypatch):
    explicit, _, _ = dirs
    path, digest = write_named_by_hash(explicit, "tiny", b"some weights")
    assert verify_weights_file(path)
    assert verify_weights_file(path, digest)
    assert not verify_weights_file(path, "0" * 64)  # right prefix, wrong full hash
    wrong = explicit / "tiny-00000000.pth"
    wrong.write_bytes(b"some weights")
    assert not verify_weights_file(wrong)

    spec = WeightsFile(path.name, "https://example.org/" + path.name, "test weights", digest)
    monkeypatch.setitem(KNOWN_WEIGHTS, path.name, spec)
    assert resolve_weights(path.name, explicit) == path
    assert {r["name"]: r["status"] for r in weights_status(explicit)}[path.name] == "verified"

    # the hash is cached per (path, mtime, size): no re-hashing while the file is unchanged ...
    class NoHashing:
        @staticmethod
        def sha256():
            raise AssertionError("hashed again")

    monkeypatch.setattr(hub_mod, "hashlib", NoHashing)
    assert resolve_weights(path.name, explicit) == path
    assert file_sha256(path) == digest
    # ... and a changed file is hashed again
    path.write_bytes(b"other weights!")
    os.utime(path, ns=(1, 1))
    with pytest.raises(AssertionError, match="hashed again"):
        resolve_weights(path.name, explicit)


def test_unknown_name():
    with pytest.raises(KeyError, match="known"):
        resolve_weights("resnet50-0676ba61.pth")


def test_metric_suite_fails_fast_on_missing_weights(dirs):
    explicit, _, _ = dirs
    with pytest.raises(WeightsError, match=ALEX):
        MetricSuite("psnr,lpips", weights_dir=explicit)
    with pytest.raises(WeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        MetricSuite("psnr,rfid", weights_dir=explicit)
    MetricSuite("psnr,ssim,ms-ssim")  # no network, no weights needed


def test_read_weights_file_reads_legacy_format_and_rejects_garbage(tmp_path):
    import torch

    from nafrestore.metrics.weights import read_weights_file

    # torchvision's 2017 AlexNet/VGG files predate the zip format: the safe loader must read both.
    sd = {"features.0.weight": torch.randn(2, 3), "features.0.bias": torch.zeros(2)}
    legacy = tmp_path / "legacy.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    loaded = read_weights_file(legacy)
    assert loaded.keys() == sd.keys() and torch.equal(loaded["features.0.weight"], sd["features.0.weight"])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="cannot be read"):
        read_weights_file(garbage)


def test_a_missing_file_is_downloaded_into_the_first_folder_and_verified(dirs, monkeypatch):
    """Against an HTTP server on 127.0.0.1: downloaded once (verified), then found; offline, no request at all."""
    import http.server
    import threading

    explicit, _, _ = dirs
    payload = b"downloaded weights" * 1000
    path_in_name = f"tiny-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path_in_name}"
        spec = WeightsFile(path_in_name, url, "test weights", hashlib.sha256(payload).hexdigest())
        monkeypatch.setitem(KNOWN_WEIGHTS, path_in_name, spec)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with pytest.raises(WeightsError) as err:  # offline (the fixture): no request
            resolve_weights(path_in_name, explicit)
        assert url in str(err.value) and str(explicit) in str(err.value) and requests == []
        monkeypatch.delenv("NAFRESTORE_OFFLINE")
        assert resolve_weights(path_in_name, explicit) == explicit / path_in_name
        assert (explicit / path_in_name).read_bytes() == payload and requests == [f"/{path_in_name}"]
        assert resolve_weights(path_in_name, explicit) == explicit / path_in_name and len(requests) == 1
        assert {r["name"]: r["status"] for r in weights_status(explicit)}[path_in_name] == "verified"
    finally:
        server.shutdown()
        server.server_close()
