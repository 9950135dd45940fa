"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

The browser is Debian's ``chromium`` (or ``$NAFRESTORE_CHROMIUM``), started with ``--remote-debugging-pipe``: the
protocol's JSON messages go over two pipes (the browser reads file descriptor 3 and writes 4, each message ended
by a NUL byte), so the client below needs nothing but the standard library: no driver binary whose version must
match the browser's, no browser download, no port. Without a browser the test is skipped, with the reason.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from nafrestore import evaluation as ev
from nafrestore.cli import app
from nafrestore.data import save_image
from nafrestore.metrics import MetricSuite
from nafrestore.report import ReportImages, write_eval_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_browser() -> str | None:
    return os.environ.get("NAFRESTORE_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)


class Browser:
    """Headless Chromium and one page of it, over the DevTools protocol on a pipe.

    Every event the page sends is kept in :attr:`events` (console messages, exceptions, network requests), so a
    test can check afterwards that there were no errors and no requests outside the report's folder.
    """

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 860) -> None:
        commands_read, self._commands = os.pipe()  # the browser reads its commands on fd 3 ...
        self._replies, replies_write = os.pipe()  # ... and writes replies and events on fd 4

        def give_the_browser_its_pipes() -> None:  # runs in the child, before exec
            # Lift both ends above the low numbers first, so that placing one on 3 cannot close the other.
            high_read = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            high_write = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        args = [binary, "--headless=new", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-extensions", "--disable-sync", "--disable-background-networking",
                "--disable-component-update", "--hide-scrollbars", "--mute-audio"]  # fmt: skip
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox (CI containers)
        self.log = profile / "chromium.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*args, "about:blank"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                close_fds=False, preexec_fn=give_the_browser_its_pipes,  # the test starts no threads
            )  # fmt: skip
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    # -- the protocol ------------------------------------------------------------------------------------------

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the browser in time")
            if select.select([self._replies], [], [], left)[0]:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    tail = self.log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the browser closed its pipe; its log ends with:\n{tail}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data) :]
        deadline = time.monotonic() + 60
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command to the page."""
        return self.call(method, params, self.session)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)

    # -- the page ----------------------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Load ``url`` as a new document (also when only its #fragment differs from the current one)."""
        for address in ("about:blank", url):
            start = len(self.events)
            self.send("Page.navigate", {"url": address})
            self.wait_event("Page.loadEventFired", start)

    def wait_event(self, method: str, since: int, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[since:]:
                if event.get("method") == method:
                    return event
            since = len(self.events)
            self.events.append(self._read(deadline))

    def js(self, expression: str) -> Any:
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)

    def rect(self, selector: str) -> dict[str, float]:
        """Where an element is on the screen, scrolled into view first (a click outside the window is lost)."""
        return self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                       "e.scrollIntoView({block: 'nearest'}); return JSON.parse(JSON.stringify("
                       "e.getBoundingClientRect())); })()")  # fmt: skip

    def center(self, selector: str) -> tuple[float, float]:
        r = self.rect(selector)
        return r["left"] + r["width"] / 2, r["top"] + r["height"] / 2

    def mouse(self, kind: str, x: float, y: float, buttons: int = 0) -> None:
        params = {"type": kind, "x": x, "y": y, "button": "left" if kind != "mouseMoved" else "none",
                  "buttons": buttons, "clickCount": 1 if kind != "mouseMoved" else 0}  # fmt: skip
        self.send("Input.dispatchMouseEvent", params)

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, 1)
        self.mouse("mouseReleased", x, y)

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 8) -> None:
        self.mouse("mouseMoved", *start)
        self.mouse("mousePressed", *start, 1)
        for k in range(1, steps + 1):
            t = k / steps
            self.mouse("mouseMoved", start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]), 1)
        self.mouse("mouseReleased", *end)

    def press(self, key: str) -> None:
        code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}" if len(key) == 1 else key
        vk = ord(key.upper()) if len(key) == 1 else {"Escape": 27, "ArrowLeft": 37, "ArrowRight": 39}[key]
        base = {"key": key, "code": code, "windowsVirtualKeyCode": vk}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", **base, **({"text": key} if len(key) == 1 else {})})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def brightness(self, x: float, y: float, radius: int = 6) -> float:
        """Mean gray level (0-255) of the screen around (x, y): what the user sees there."""
        clip = {"x": x - radius, "y": y - radius, "width": 2 * radius, "height": 2 * radius, "scale": 1}
        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png", "clip": clip})["data"])
        return float(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).mean())

    # -- what happened -----------------------------------------------------------------------------------------

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (failed loads, blocked requests, CSP)."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(json.dumps(params.get("exceptionDetails"))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(f"console.{params['type']}: {json.dumps(params.get('args'))[:500]}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        return out

    def requests(self, since: int = 0) -> list[str]:
        """The URLs the page asked for since event ``since`` (about:blank, between two pages, is not a request)."""
        return [
            e["params"]["request"]["url"]
            for e in self.events[since:]
            if e.get("method") == "Network.requestWillBeSent" and e["params"]["request"]["url"] != "about:blank"
        ]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    binary = find_browser()
    if binary is None:
        pytest.skip(
            "the browser test needs Chromium: `apt-get install chromium` (what .ci/run does), or set "
            "NAFRESTORE_CHROMIUM to a Chrome/Chromium binary"
        )
    b = Browser(binary, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


def photo(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((h // 16, w // 16, 3)).astype(np.float32)
    return np.kron(0.3 + 0.7 * small, np.ones((16, 16, 1), dtype=np.float32))  # bright: gray level 120-255


def make_folders(root: Path, n: int = 5) -> dict[str, Path]:
    """Ground truth, a dark noisy input (so that what is on screen tells input from restored) and two restorations
    of different quality per image, so every column sorts differently."""
    rng = np.random.default_rng(1)
    dirs = {k: root / k for k in ("gt", "lq", "good", "fair")}
    for i in range(n):
        gt = photo(i, 192, 256)
        lq = np.clip(0.15 * gt + rng.normal(0, 0.02 + 0.01 * i, gt.shape), 0, 1).astype(np.float32)
        w = 0.97 - 0.04 * ((i * 3) % n)  # the restored images' quality does not follow the names' order
        name = f"img{i}" if i != 3 else "sub/photo #3"
        save_image(dirs["gt"] / f"{name}.png", gt)
        save_image(dirs["lq"] / f"{name}.png", lq)
        save_image(dirs["good"] / f"{name}.png", (w * gt + (1 - w) * lq).astype(np.float32))
        save_image(dirs["fair"] / f"{name}.png", (0.8 * w * gt + (1 - 0.8 * w) * lq).astype(np.float32))
    return dirs


def fake_run(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  name: lka_nafnet\ntrain:\n  iters: 300\n")
    lines = [{"step": s, "loss": -20 - s / 30, "lr": 1e-3 * (1 - s / 300)} for s in range(10, 301, 10)]
    lines += [{"step": s, "val/psnr": 25 + s / 60, "val/input_psnr": 17.0, "val/n_images": 5} for s in (100, 200, 300)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


@pytest.mark.slow  # a browser in a subprocess
@pytest.mark.timeout(300)
def test_report_in_a_headless_browser(browser: Browser, tmp_path: Path) -> None:
    dirs = make_folders(tmp_path)
    single = tmp_path / "report"
    # One model, through the library: previews at most 128 px, so that zooming to 1:1 needs the full-size files.
    images = ReportImages(single, preview_side=128)
    suite, input_suite = MetricSuite("psnr,ssim"), MetricSuite("psnr,ssim")
    result = ev.score(ev.folder_items(dirs["good"], dirs["gt"], dirs["lq"]), suite, input_suite=input_suite,
                      report_images=images)  # fmt: skip
    result.origin = {"pred": str(dirs["good"]), "gt": str(dirs["gt"]), "run_dir": str(fake_run(tmp_path))}
    page = write_eval_report(result, single)
    check_single_model_report(browser, page)

    # Two models, through the command line.
    several = tmp_path / "compare"
    out = CliRunner().invoke(app, ["eval", "--pred", f"good={dirs['good']}", "--pred", f"fair={dirs['fair']}",
                                   "--gt", str(dirs["gt"]), "--lq", str(dirs["lq"]), "--report", str(several),
                                   "--quiet"])  # fmt: skip
    assert out.exit_code == 0, out.output
    check_comparison_report(browser, several / "report.html")


def check_single_model_report(browser: Browser, page: Path) -> None:
    data = json.loads((page.parent / "report.json").read_text())
    start = len(browser.events)
    browser.open(file_url(page))
    browser.wait_for("document.querySelectorAll('#image-table tbody tr').length === 5")
    # Training curves drawn from metrics.jsonl, and the run's config.
    assert browser.js("document.querySelectorAll('#curves svg').length") == 3  # loss, lr, validation psnr
    assert "lka_nafnet" in browser.js("document.querySelector('#config pre').textContent")
    assert browser.js("[...document.querySelectorAll('#image-table img')].every(i => i.loading === 'lazy')")
    # No comparison image is loaded before the viewer opens.
    assert not [u for u in browser.requests(start) if "/images/" in u or "/previews/" in u]

    # Sorting: a click on a header orders the rows by that column; a second click reverses them.
    psnr = {im["name"]: im["scores"]["restored"]["psnr"] for im in data["images"]}
    by_psnr = sorted(psnr, key=psnr.get)
    rows = "[...document.querySelectorAll('#image-table tbody tr')].map(r => r.dataset.name)"
    header = "#image-table thead th:nth-child({})"
    columns = browser.js("[...document.querySelectorAll('#image-table thead th')].map(t => t.textContent)")
    name_col, psnr_col = columns.index("image") + 1, columns.index("psnrrestored") + 1
    browser.click(*browser.center(header.format(name_col)))
    assert browser.js(rows) == sorted(psnr) and by_psnr != sorted(psnr)
    browser.click(*browser.center(header.format(psnr_col)))
    assert browser.js(rows) == by_psnr[::-1]  # best first
    assert browser.js(f"document.querySelector('{header.format(psnr_col)}').getAttribute('aria-sort')") == "descending"
    browser.click(*browser.center(header.format(psnr_col)))
    assert browser.js(rows) == by_psnr

    # The viewer: open the worst image (now the first row), input on the left of the slider, restored on the right.
    browser.click(*browser.center("#image-table tbody tr:first-child td.name"))
    browser.wait_for("!document.getElementById('viewer').hidden")
    loaded = "['img-a', 'img-b'].map(id => document.getElementById(id)).every(i => i.complete && i.naturalWidth)"
    browser.wait_for(loaded)
    assert browser.js("location.hash") == "#image=" + quote(by_psnr[0], safe="")
    pane = browser.rect("#pane-0")
    x, y = pane["left"] + pane["width"] * 0.5, pane["top"] + pane["height"] * 0.5
    visible = f"document.elementFromPoint({x}, {y}).dataset.view"
    # Drag the divider to the right: the middle of the image shows the input (dark) ...
    handle = browser.center("#divider .handle")
    browser.drag(handle, (pane["left"] + pane["width"] * 0.85, handle[1]))
    assert browser.js(visible) == "input"
    dark = browser.brightness(x, y)
    # ... click the slider near its left end: now it shows the restored image (bright), on screen too.
    split = browser.rect("#split")
    browser.click(split["left"] + split["width"] * 0.15, split["top"] + split["height"] / 2)
    assert browser.js("Number(document.getElementById('split').value)") < 20
    assert browser.js(visible) == "restored"
    bright = browser.brightness(x, y)
    assert bright > dark + 50, (dark, bright)

    # Keys flip between the views: 3 the ground truth, 1 the input, r the restored image.
    for key, view in (("3", "gt"), ("1", "input"), ("r", "restored"), ("g", "gt"), ("i", "input")):
        browser.press(key)
        assert browser.js(visible) == view, key
    browser.press("s")  # back to the slider
    assert browser.js(visible) == "restored" and not browser.js("document.getElementById('divider').hidden")
    browser.press("ArrowRight")
    assert browser.js("document.getElementById('viewer-name').textContent") == by_psnr[1]
    browser.press("Escape")
    browser.wait_for("document.getElementById('viewer').hidden")
    assert browser.js("location.hash") == ""

    # A link to one image at 25 %: the previews load, and the full-size files only when zoomed to 1:1.
    best = by_psnr[-1]
    before = len(browser.events)
    browser.open(file_url(page) + "#image=" + quote(best, safe="") + "&zoom=0.25")
    browser.wait_for(loaded)
    shown = browser.requests(before)
    assert [u for u in shown if "/previews/" in u] and not [u for u in shown if "/images/" in u], shown
    before = len(browser.events)
    browser.click(*browser.center("#v-1to1"))
    browser.wait_for("document.getElementById('img-a').dataset.file.startsWith('images/')")
    browser.wait_for(loaded)
    files = next(im["files"] for im in data["images"] if im["name"] == best)
    full = sorted(u[len(file_url(page.parent)) + 1 :] for u in browser.requests(before) if "/images/" in u)
    assert full == [quote(files["input"]["full"]), quote(files["restored"]["full"])]
    # Side by side: both panes are panned together.
    browser.press("s")
    browser.wait_for("!document.getElementById('pane-1').hidden")
    transforms = "[...document.querySelectorAll('.canvas')].map(c => c.style.transform)"
    before_drag = browser.js(transforms)
    browser.drag(browser.center("#pane-1"), (browser.center("#pane-1")[0] - 40, browser.center("#pane-1")[1] - 30))
    moved = browser.js(transforms)
    assert len(moved) == 3 and len(set(moved)) == 1 and "scale(1)" in moved[0], moved
    assert moved != before_drag

    assert browser.errors() == []
    check_requests_stay_in(browser, start, page.parent)


def check_comparison_report(browser: Browser, page: Path) -> None:
    start = len(browser.events)
    browser.open(file_url(page))
    browser.wait_for("document.querySelectorAll('#image-table tbody tr').length === 5")
    summary = browser.js("[...document.querySelectorAll('#summary-table tbody th')].map(t => t.textContent)")
    assert summary == ["input", "good", "fair"]
    subs = browser.js("[...document.querySelectorAll('#image-table thead .sub')].map(t => t.textContent)")
    assert subs == ["input", "good", "fair"] * 2  # psnr and ssim: one column per model
    browser.click(*browser.center("#image-table tbody tr:nth-child(2) td.name"))
    browser.wait_for("!document.getElementById('viewer').hidden")
    options = browser.js("[...document.querySelectorAll('#v-a option')].map(o => o.value)")
    assert options == ["input", "good", "fair", "gt"]
    # The slider between the two models: choose them, then key 3 shows the second model alone.
    browser.js("(() => { const a = document.getElementById('v-a'); a.value = 'good';"
               "a.dispatchEvent(new Event('change')); const b = document.getElementById('v-b'); b.value = 'fair';"
               "b.dispatchEvent(new Event('change')); })()")  # fmt: skip
    pane = browser.rect("#pane-0")
    x, y = pane["left"] + pane["width"] * 0.3, pane["top"] + pane["height"] * 0.5
    assert browser.js(f"document.elementFromPoint({x}, {y}).dataset.view") == "good"
    browser.press("3")
    assert browser.js(f"document.elementFromPoint({x}, {y}).dataset.view") == "fair"
    browser.wait_for("['img-a', 'img-b'].every(id => document.getElementById(id).complete)")
    assert browser.errors() == []
    check_requests_stay_in(browser, start, page.parent)


def check_requests_stay_in(browser: Browser, start: int, folder: Path) -> None:
    requests = browser.requests(start)
    assert requests, "no request seen: the Network domain is not reporting"
    prefix = file_url(folder) + "/"
    outside = [u for u in requests if not u.startswith(prefix)]
    assert not outside, outside
