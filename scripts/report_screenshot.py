"""The README's screenshots of the HTML report (docs/report-table.png, docs/report-viewer.png).

A small comparison, offline and in seconds: the 4 held-out sample photographs with Gaussian noise (sigma 25),
restored by OpenCV's non-local means and bilateral filter (and by a model, with --ckpt, e.g. runs/demo after
`make demo`), scored with `nafrestore eval --pred nlm=... --pred bilateral=... --gt ... --lq ... --report`, then
photographed by headless Chromium (`--screenshot`) and reduced to a 256-colour palette to keep the PNGs small.

Usage: python scripts/report_screenshot.py [--out docs] [--work /tmp/report-shot] [--ckpt runs/demo]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHOTS = {  # file -> (window size, what the URL opens)
    "report-table.png": ((1200, 900), ""),
    "report-viewer.png": ((1000, 640), "#image=astronaut&split=46&zoom=1.2"),
}


def make_folders(work: Path, ckpt: str | None) -> dict[str, Path]:
    from nafrestore.data import SyntheticDataset, save_image
    from nafrestore.data.sample import sample_images
    from nafrestore.inference import load_model, restore

    photos = sample_images("val")
    data = SyntheticDataset([img for _, img in photos], [{"type": "gaussian_noise", "sigma": 25}],
                            names=[n for n, _ in photos], seed=0)  # fmt: skip
    model = load_model(ckpt, device="cpu") if ckpt else None
    dirs = {k: work / k for k in ("gt", "noisy", "nlm", "bilateral", *(["model"] if model else []))}
    for i in range(len(data)):
        item = data[i]
        noisy = item["lq"].permute(1, 2, 0).numpy()
        save_image(dirs["gt"] / f"{item['name']}.png", item["gt"])
        save_image(dirs["noisy"] / f"{item['name']}.png", item["lq"])
        bgr = np.ascontiguousarray((noisy[..., ::-1] * 255).round().astype(np.uint8))
        for name, out in (("nlm", cv2.fastNlMeansDenoisingColored(bgr, None, 18, 18, 7, 21)),
                          ("bilateral", cv2.bilateralFilter(bgr, 9, 60, 5))):  # fmt: skip
            save_image(dirs[name] / f"{item['name']}.png", out[..., ::-1].astype(np.float32) / 255)
        if model is not None:
            with torch.no_grad():
                save_image(dirs["model"] / f"{item['name']}.png", restore(model, noisy))
    return dirs


def screenshot(browser: str, url: str, size: tuple[int, int], path: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        args = [
            browser,
            "--headless=new",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--screenshot={path}",
            url,
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        subprocess.run(args, check=True, capture_output=True, timeout=120)


def palette(path: Path) -> None:
    """Quantise to 256 colours (a screenshot's PNG shrinks several times; the photographs stay recognisable)."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--work", default=None, help="folder for the images and the report (default: a temporary one)")
    parser.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--ckpt", default=None, help="a model to compare too (checkpoint, run directory or name)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="report-shot-"))
    dirs = make_folders(work, args.ckpt)
    report = work / "report"
    preds = [f"--pred={name}={dirs[name]}" for name in dirs if name not in ("gt", "noisy")]
    cmd = [sys.executable, "-m", "nafrestore", "eval", *preds, "--gt", str(dirs["gt"]), "--lq", str(dirs["noisy"]),
           "--metrics", "psnr,ssim", "--report", str(report), "--quiet"]  # fmt: skip
    print("$ nafrestore " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (size, fragment) in SHOTS.items():
        screenshot(args.browser, (report / "report.html").as_uri() + fragment, size, out / name)
        palette(out / name)
        print(f"{out / name}: {(out / name).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
