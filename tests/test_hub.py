"""Named, downloaded models (nafrestore.hub, nafrestore.models.pretrained): downloads from an HTTP server on
127.0.0.1 that this file starts (never the internet), verification, cut transfers, offline, mirrors; registry names
in infer / eval / export / info / load_model / train; `nafrestore models`."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nafrestore import hub
from nafrestore.cli import app
from nafrestore.errors import CheckpointError, ChecksumError, DownloadError
from nafrestore.hub import RemoteFile, fetch, find_file
from nafrestore.loading import build_model, load_spec, preset_config, resolve_source
from nafrestore.models import pretrained

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(range(256)) * 1200  # 307,200 bytes


class FileServer:
    """Serves ``files`` over HTTP on 127.0.0.1 and records every request as (path, Range header).

    ``cut[name] = n``: the next response for ``name`` announces the full Content-Length but sends only ``n`` bytes
    and closes. ``stall[name] = n``: the same, but the connection stays open, silent, until ``release`` is set.
    ``ranges``: answer ``Range: bytes=N-`` with 206 and the rest (False: ignore it, send everything).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.stall: dict[str, int] = {}
        self.release = threading.Event()
        self.ranges = True
        self.delay = 0.0  # seconds before each response
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Range")))
                time.sleep(server.delay)
                data = server.files.get(self.path.lstrip("/"))
                if data is None:
                    self.send_error(404)
                    return
                start, wanted = 0, self.headers.get("Range")
                if wanted and server.ranges:
                    start = int(wanted.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut.pop(self.path.lstrip("/"), None)
                stall = server.stall.pop(self.path.lstrip("/"), None)
                self.wfile.write(body if cut is None and stall is None else body[: cut or stall])
                if stall is not None:
                    server.release.wait(30)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never through a proxy set in the environment
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("NAFRESTORE_OFFLINE")  # conftest turns downloads off for every other test
    s = FileServer()
    yield s
    s.close()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty download cache, and an empty torch hub cache."""
    folder = tmp_path / "home"
    monkeypatch.setenv("NAFRESTORE_HOME", str(folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return folder


def remote(server: FileServer, name: str = "weights.pth", data: bytes = PAYLOAD, **kw) -> RemoteFile:
    server.files[name] = data
    kw.setdefault("sha256", hashlib.sha256(data).hexdigest())
    return RemoteFile(name, urls=(server.url(name),), what="test weights", **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------------------
# Downloads


def test_a_download_is_verified_cached_and_then_used_offline(server, home):
    file = remote(server, size=len(PAYLOAD))
    path = fetch(file, progress=False)
    assert path == home / "weights.pth" and path.read_bytes() == PAYLOAD
    assert listing(home) == ["weights.pth"]  # no temporary or lock file left
    assert fetch(file, offline=True) == path and fetch(file) == path
    assert len(server.requests) == 1  # downloaded once


def test_concurrent_fetches_download_once(server, home):
    file = remote(server)
    server.delay = 0.3
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch(file, progress=False))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [home / file.name] * 3 and len(server.requests) == 1
    assert listing(home) == [file.name]


def test_a_wrong_hash_is_refused_and_leaves_nothing_in_the_cache(server, home):
    file = remote(server, sha256="0" * 64)
    with pytest.raises(ChecksumError) as err:
        fetch(file, progress=False)
    msg = str(err.value)
    assert "0" * 64 in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg and file.urls[0] in msg
    assert "deleted" in msg and "\n" not in msg
    assert listing(home) == []


def test_a_wrong_size_is_refused_before_hashing(server, home):
    file = remote(server, size=len(PAYLOAD) + 1)
    with pytest.raises(DownloadError, match="bytes"):
        fetch(file, progress=False)
    assert find_file(file.name, [(home, "")]) is None


@pytest.mark.parametrize("ranges", [True, False], ids=["continued", "restarted"])
def test_a_cut_connection_leaves_no_complete_looking_file_and_the_next_call_succeeds(server, home, ranges):
    server.ranges = ranges
    file = remote(server)
    half = len(PAYLOAD) // 2
    server.cut[file.name] = half
    with pytest.raises(DownloadError) as err:
        fetch(file, progress=False)
    msg = str(err.value)
    assert f"{half:,} of {len(PAYLOAD):,} bytes" in msg and file.urls[0] in msg and "\n" not in msg
    assert listing(home) == ["weights.pth.partial"]  # a temporary name: never taken for the finished file
    assert find_file(file.name, hub.default_dirs()) is None
    with pytest.raises(DownloadError, match="not downloaded yet"):
        fetch(file, offline=True)

    path = fetch(file, progress=False)
    assert path.read_bytes() == PAYLOAD and listing(home) == ["weights.pth"]
    assert server.requests[-1][1] == f"bytes={half}-"  # the retry asked for the rest
    assert len(server.requests) == 2


@pytest.mark.parametrize("sent", [5000, 0])
def test_a_stalled_transfer_says_what_arrived_and_keeps_only_what_it_says(server, home, monkeypatch, sent):
    monkeypatch.setattr(hub, "TIMEOUT_S", 0.5)
    file = remote(server)
    server.stall[file.name] = sent
    with pytest.raises(DownloadError) as err:
        fetch(file, progress=False)
    msg = str(err.value)
    assert f"{file.urls[0]}: the transfer broke off after {sent:,} of {len(PAYLOAD):,} bytes (timed out)." in msg
    partial = home / "weights.pth.partial"
    if sent:
        assert f"The partial download {partial} is kept and continued next time." in msg
        assert listing(home) == [partial.name] and partial.read_bytes() == PAYLOAD[:sent]
    else:  # nothing arrived: nothing kept, and no claim that it is
        assert "partial" not in msg and listing(home) == []
    server.release.set()
    assert fetch(file, progress=False).read_bytes() == PAYLOAD
    assert server.requests[-1][1] == (f"bytes={sent}-" if sent else None)  # the next call continued it


def test_a_404_is_one_clear_message(server, home):
    file = RemoteFile("missing.pth", "a" * 64, (server.url("missing.pth"),), what="test weights")
    with pytest.raises(DownloadError) as err:
        fetch(file, progress=False)
    msg = str(err.value)
    assert "HTTP 404" in msg and file.urls[0] in msg and str(home) in msg and "missing.pth" in msg
    assert "\n" not in msg and not isinstance(err.value, ChecksumError)
    assert listing(home) == []


def test_a_refused_connection_is_one_clear_message(server, home):
    url = f"http://127.0.0.1:{closed_port()}/weights.pth"
    file = RemoteFile("weights.pth", "a" * 64, (url,), what="test weights")
    with pytest.raises(DownloadError) as err:
        fetch(file, progress=False)
    msg = str(err.value)
    assert "cannot connect" in msg and "refused" in msg.lower() and url in msg and str(home) in msg
    assert "\n" not in msg
    assert listing(home) == []


def test_offline_makes_no_connection_and_says_what_to_put_where(server, home, monkeypatch):
    file = remote(server)

    def no_network(*args, **kwargs):
        raise AssertionError("connected while offline")

    monkeypatch.setattr(socket, "create_connection", no_network)
    for how in ("env", "argument", "options"):
        with pytest.raises(DownloadError) as err:
            if how == "env":
                monkeypatch.setenv("NAFRESTORE_OFFLINE", "1")
                fetch(file)
                monkeypatch.delenv("NAFRESTORE_OFFLINE")
            elif how == "argument":
                fetch(file, offline=True)
            else:
                with hub.options(offline=True):
                    fetch(file)
        msg = str(err.value)
        assert "offline" in msg and file.urls[0] in msg and str(home) in msg and file.name in msg
        assert "\n" not in msg
    assert server.requests == []
    assert listing(home) == []


def test_a_file_put_there_by_hand_is_verified_and_used_offline(server, home):
    file = remote(server)
    home.mkdir()
    (home / file.name).write_bytes(PAYLOAD)
    assert fetch(file, offline=True) == home / file.name
    (home / file.name).write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(ChecksumError) as err:
        fetch(file, offline=True)
    assert str(home / file.name) in str(err.value) and file.sha256 in str(err.value)
    assert (home / file.name).exists()  # someone's file: reported, not deleted
    # the torch hub cache is searched too
    (home / file.name).unlink()
    hub_dir = hub.hub_checkpoint_dir()
    hub_dir.mkdir(parents=True)
    (hub_dir / file.name).write_bytes(PAYLOAD)
    assert fetch(file, offline=True) == hub_dir / file.name
    assert server.requests == []


def test_mirrors_are_tried_first(server, home, monkeypatch):
    file = RemoteFile(
        "weights.pth", hashlib.sha256(PAYLOAD).hexdigest(), (server.url("gone/weights.pth"),), what="test weights"
    )
    server.files["mirror/weights.pth"] = PAYLOAD
    dead = f"http://127.0.0.1:{closed_port()}/x"
    monkeypatch.setenv("NAFRESTORE_MIRROR", f"{dead}, {server.url('mirror')}/")
    assert hub.file_urls(file) == [f"{dead}/weights.pth", server.url("mirror/weights.pth"), file.urls[0]]
    assert fetch(file, progress=False).read_bytes() == PAYLOAD
    assert [path for path, _ in server.requests] == ["/mirror/weights.pth"]


def test_progress_bar_and_default_cache_folder(server, home, monkeypatch, capsys):
    file = remote(server)
    fetch(file, progress=True)
    err = capsys.readouterr().err
    assert f"downloading {file.urls[0]}" in err
    monkeypatch.delenv("NAFRESTORE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    assert hub.cache_dir() == home / "xdg" / "nafrestore"


# ------------------------------------------------------------------------------------------------------------
# The registry


NAFNET = ["nafnet-sidd-width32", "nafnet-sidd-width64", "nafnet-gopro-width32", "nafnet-gopro-width64",
          "nafnet-reds-width64"]  # fmt: skip


def test_registry_entries():
    shipped_names = {f"lka-nafnet-w12-denoise-real{v}" for v in ("-v5", "-v4", "-v3", "-v2", "")}
    assert set(NAFNET) | shipped_names == set(pretrained.PRETRAINED)
    assert pretrained.find_pretrained("default").name == "lka-nafnet-w12-denoise-real-v5"
    for name in shipped_names:  # earlier defaults stay loadable under their own names
        shipped = pretrained.PRETRAINED[name]
        assert shipped.shipped and shipped.remote is None and shipped.preset is None
        assert shipped.path.is_file() and shipped.card.is_file()
        assert shipped.path.stat().st_size <= 5_000_000
    for name in NAFNET:
        entry = pretrained.PRETRAINED[name]
        assert not entry.shipped and entry.preset == name and preset_config(entry) == ROOT / "configs" / f"{name}.yaml"
        assert len(entry.sha256) == 64 and entry.license == "NAFNet (megvii-research/NAFNet), MIT license"
        assert entry.urls == (f"https://huggingface.co/nyanko7/nafnet-models/resolve/main/{entry.file}",)
        assert entry.remote.name == entry.file and entry.remote.sha256 == entry.sha256
    sidd32 = pretrained.PRETRAINED["nafnet-sidd-width32"]
    assert sidd32.file == "NAFNet-SIDD-width32.pth" and sidd32.size == 116_861_841
    assert sidd32.published == "SIDD 39.97 dB / 0.960"
    assert pretrained.PRETRAINED["nafnet-reds-width64"].published == "REDS 29.09 dB / 0.867"
    # the REDS preset is the GoPro-width64 architecture
    reds, gopro = (load_spec(n, require_weights=False) for n in ("nafnet-reds-width64", "nafnet-gopro-width64"))
    assert (reds.model_name, reds.model_args, reds.tlc_train_size) == (
        gopro.model_name, gopro.model_args, gopro.tlc_train_size
    )  # fmt: skip


def test_a_registry_name_wins_over_its_preset_and_needs_no_download_for_the_architecture(home):
    # `--model NAME` alone is the pretrained model (a preset alone would be refused for lack of weights) ...
    assert resolve_source(None, "nafnet-sidd-width32") == ("nafnet-sidd-width32", None)
    with pytest.raises(CheckpointError, match="no trained weights"):
        resolve_source(None, "lka-nafnet-w12")
    # ... `info` gets the architecture without the weights (offline here: a download would fail) ...
    spec = load_spec("nafnet-sidd-width32", require_weights=False)
    assert spec.state is None and spec.model_args["width"] == 32
    # ... and loading it offline says which file to put where.
    with pytest.raises(DownloadError) as err:
        load_spec("nafnet-sidd-width32")
    msg = str(err.value)
    assert "NAFNet-SIDD-width32.pth" in msg and str(home) in msg and pretrained.NAFNET_MIRROR in msg


def test_eval_of_a_preset_that_is_also_a_model_name_points_to_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    result = runner.invoke(app, ["eval", "nafnet-sidd-width32"])
    assert result.exit_code == 2 and "--model nafnet-sidd-width32" in result.output, result.output


def test_infer_model_name_with_the_file_in_the_cache(tmp_path, home, monkeypatch):
    """`nafrestore infer DIR -o OUT --model nafnet-gopro-width32`: the name brings the preset and the weights."""
    entry = pretrained.PRETRAINED["nafnet-gopro-width32"]
    spec = load_spec(entry.name, require_weights=False)
    torch.manual_seed(0)
    state = build_model(spec.model_name, spec.model_args).state_dict()
    home.mkdir()
    torch.save({"params": state}, home / entry.file)  # as the official releases
    digest = hashlib.sha256((home / entry.file).read_bytes()).hexdigest()
    monkeypatch.setitem(pretrained.PRETRAINED, entry.name, dataclasses.replace(entry, sha256=digest))
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8))
    result = runner.invoke(app, ["infer", str(folder), "-o", str(tmp_path / "out"), "--model", entry.name,
                                 "--device", "cpu", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "restored 1" in result.output
    assert cv2.imread(str(tmp_path / "out" / "a.png")).shape == (12, 16, 3)
    assert resolve_source(entry.name, None) == (entry.name, None)  # --ckpt NAME names the same model


# ------------------------------------------------------------------------------------------------------------
# A tiny registry model served by the local server: every command that loads a model


TINY_CONFIG = """model:
  name: nafnet
  width: 4
  enc_blocks: [1, 1]
  middle_blocks: 1
  dec_blocks: [1, 1]
data:
  format: sample
  degradations: [{type: gaussian_noise, sigma: 25}]
"""


@pytest.fixture
def tiny(tmp_path, server, home, monkeypatch):
    """A registry entry `tiny-test` (the preset above, random weights as `{"params": ...}`) served by `server`."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    torch.manual_seed(1)
    model = build_model("nafnet", {"width": 4, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]})
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.copy_(torch.randn(p.shape) * 0.2)  # not the identity
    source = tmp_path / "tiny-source.pth"
    torch.save({"params": model.state_dict()}, source)
    file = remote(server, "tiny-test.pth", source.read_bytes())
    entry = pretrained.PretrainedModel(
        "tiny-test", "a test model", file.name, preset=str(config), sha256=file.sha256, urls=file.urls,
        benchmark="nothing", psnr=1.0, ssim=0.5,
    )  # fmt: skip
    monkeypatch.setitem(pretrained.PRETRAINED, entry.name, entry)
    return entry, model.state_dict(), config


def images(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return folder


def test_every_command_takes_a_registry_name(tiny, server, home, tmp_path):
    import nafrestore
    from nafrestore.inference import restore

    entry, state, config = tiny
    result = runner.invoke(app, ["info", entry.name])
    assert result.exit_code == 0 and "parameters:" in result.output, result.output
    assert server.requests == []  # the architecture alone: nothing downloaded

    src = images(tmp_path / "in")
    # fp32 as restore() below: auto may pick bf16 on a CPU with native bf16 (AVX512-BF16)
    result = runner.invoke(app, ["infer", str(src), "-o", str(tmp_path / "out"), "--ckpt", entry.name,
                                 "--device", "cpu", "--quiet", "--precision", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(server.requests) == 1 and (home / entry.file).is_file()

    result = runner.invoke(app, ["infer", str(src), "-o", str(tmp_path / "out2"), "--model", entry.name,
                                 "--device", "cpu", "--quiet", "--offline", "--precision", "fp32"])  # fmt: skip
    assert result.exit_code == 0, result.output
    net = nafrestore.load_model(entry.name)
    image = cv2.imread(str(src / "0.png"))[:, :, ::-1].copy()
    expected = restore(net, image)[:, :, ::-1]
    for out in ("out", "out2"):
        assert np.array_equal(cv2.imread(str(tmp_path / out / "0.png")), expected)
    assert torch.equal(load_spec(config, weights=entry.name).state["ending.weight"], state["ending.weight"])

    result = runner.invoke(app, ["export", entry.name, "--format", "safetensors", "-o", str(tmp_path / "t.st")])
    assert result.exit_code == 0, result.output
    exported = load_spec(tmp_path / "t.st")
    assert all(torch.equal(exported.state[k], state[k]) for k in state)

    result = runner.invoke(app, ["eval", "--model", entry.name, "--data", str(images(tmp_path / "clean", 3)),
                                 "--metrics", "psnr", "--device", "cpu", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "restored" in result.output and "input" in result.output and " 3" in result.output
    assert len(server.requests) == 1  # downloaded once, used five times


def test_offline_flag_on_a_command_makes_no_connection(tiny, server, tmp_path):
    entry, _, _ = tiny
    result = runner.invoke(app, ["infer", str(images(tmp_path / "in", 1)), "-o", str(tmp_path / "out"),
                                 "--ckpt", entry.name, "--offline", "--quiet"])  # fmt: skip
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and entry.urls[0] in result.output and "offline" in result.output
    assert server.requests == []


def test_models_lists_the_registry_and_weights_points_to_it(tiny, home):
    entry, _, _ = tiny
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if line.startswith("tiny-test "))
    assert "not downloaded" in row and "nothing 1.00 dB / 0.500" in row
    sidd = next(line for line in lines if line.startswith("nafnet-sidd-width32 "))
    assert "111.4 MiB" in sidd and "SIDD 39.97 dB / 0.960" in sidd and "not downloaded" in sidd
    assert "MIT license" in result.output and "(= default)" in result.output
    assert "alexnet-owt-7be5be79.pth" in result.output and str(home) in result.output

    result = runner.invoke(app, ["models", "--download", entry.name, "--quiet"])
    assert result.exit_code == 0 and str(home / entry.file) in result.output, result.output
    row = next(line for line in runner.invoke(app, ["models"]).output.splitlines() if line.startswith("tiny-test "))
    assert f"verified {home / entry.file}" in row
    (home / entry.file).write_bytes(b"changed")
    row = next(line for line in runner.invoke(app, ["models"]).output.splitlines() if line.startswith("tiny-test "))
    assert "checksum mismatch" in row

    result = runner.invoke(app, ["models", "--download", "no-such-model"])
    assert result.exit_code == 2 and "nafrestore models" in result.output and "Did you mean" not in result.output
    result = runner.invoke(app, ["weights"])
    assert result.exit_code == 0 and "alexnet-owt-7be5be79.pth" in result.output
    assert "`nafrestore models`" in result.output


def test_a_misspelt_model_name_is_answered_with_the_nearest_one(tmp_path):
    src = images(tmp_path / "in", 1)
    for option in ("--model", "--ckpt"):
        result = runner.invoke(app, ["infer", str(src), "-o", str(tmp_path / "out"), option, "nafnet-sidd-widht32"])
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            "error: nafnet-sidd-widht32 does not exist, and it is not a pretrained model's name. Did you mean "
            "'nafnet-sidd-width32'? Give a model name (`nafrestore models` lists them), a checkpoint file "
            "(.pt/.pth/.safetensors) or a run directory written by `nafrestore train`.\n"
        )
    result = runner.invoke(app, ["models", "--download", "nafnet-sidd-widht32"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --download nafnet-sidd-widht32: not a pretrained model or metric weights file. Did you mean "
        "'nafnet-sidd-width32'? `nafrestore models` lists both.\n"
    )
    result = runner.invoke(app, ["models", "--download", "alexnet-owt-7be5be79"])  # a weights file's name
    assert result.exit_code == 2 and "Did you mean 'alexnet-owt-7be5be79.pth'?" in result.stderr
    assert not list(tmp_path.glob("out*"))


# ------------------------------------------------------------------------------------------------------------
# Fine-tuning: model.init_from


def test_train_init_from_a_registry_name_and_resume_ignores_it(tiny, server, tmp_path, home, monkeypatch):
    from nafrestore.config import load_config
    from nafrestore.data import build_datasets
    from nafrestore.engine import config_for_resume, train

    entry, state, config = tiny
    run = tmp_path / "run"
    base = [f"model.init_from={entry.name}", "data.patch_size=32", "data.num_workers=0", "data.val_max_images=1",
            "train.batch_size=2", "train.iters=2", "train.lr=1e-12", "train.min_lr=1e-13", "train.log_every=1",
            "train.ckpt_every=2", "val.every=100", "run.device=cpu", f"run.dir={run}"]  # fmt: skip
    cfg = load_config(config, base)
    assert cfg.model.init_from == entry.name  # a name stays a name
    train_set, val_set = build_datasets(cfg.data, seed=0)
    val = [{k: v[:, :32, :32] if torch.is_tensor(v) else v for k, v in val_set[0].items()}]
    train(cfg, quiet=True, datasets=(train_set, val))
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.allclose(last["model"][k], state[k], atol=1e-6) for k in state)  # lr 1e-12: still the init
    assert "initialised from tiny-test" in (run / "train.log").read_text()
    assert len(server.requests) == 1

    # resuming continues the run's own weights and never reads init_from (whose file is gone now)
    (home / entry.file).unlink()
    resumed = config_for_resume(run, None, ["train.iters=3"])
    assert resumed.model.init_from == entry.name
    train(resumed, resume=run, quiet=True, datasets=(train_set, val))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 3

    # weights of another architecture: load_weights' strict message; a relative path is stored absolute
    other = tmp_path / "other.pt"
    torch.save(
        {"params": build_model("nafnet", {"width": 8, "enc_blocks": [1, 1], "dec_blocks": [1, 1]}).state_dict()}, other
    )
    monkeypatch.chdir(tmp_path)
    cfg3 = load_config(config, [*base[1:-1], "model.init_from=other.pt", f"run.dir={tmp_path / 'run3'}"])
    assert cfg3.model.init_from == str(other)
    with pytest.raises(CheckpointError, match="do not fit the model") as err:
        train(cfg3, quiet=True, datasets=(train_set, val))
    assert "model.init_from" in str(err.value) and str(other) in str(err.value)
    assert not (tmp_path / "run3").exists()
