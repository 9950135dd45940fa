"""Real camera noise: score the noisy input, a blind non-local-means baseline and trained models on real pairs.

Pairs ``NOISY_DIR/NAME.*`` with ``CLEAN_DIR/NAME.*`` by file stem (e.g. the PolyU real-noise crops: ``noisy/`` and
``clean/``), and for each method computes the PSNR and SSIM of every image against its clean reference with
``nafrestore.metrics`` (RGB, rounded to 8 bits, no border crop: the project's conventions). The camera of an image
is the first ``_``-separated field of its file name (``Canon5D2_5_160_3200_chair_11`` -> ``Canon5D2``).

Methods, in this order:

* ``noisy input``: the noisy image itself.
* ``NLM (blind)``: OpenCV ``fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)`` with the strength set per image
  from the noise level, ``h = 8 * sigma``, where ``sigma = skimage.restoration.estimate_sigma(rgb_uint8,
  channel_axis=-1, average_sigmas=True)`` (the wavelet MAD estimate, on the 0-255 scale since the uint8 array is
  passed as is). The factor 8 is needed because that estimate only sees the finest wavelet scale, where camera
  JPEG compression and demosaicing have removed most of the noise (it reads 0.1-1.6 levels on PolyU): with
  ``h = sigma`` NLM leaves the images almost unchanged. ``--nlm-factor`` changes the 8.
* each ``--model``: a run directory, checkpoint (``.pt``) or ``.safetensors`` export, loaded with
  ``nafrestore.load_model`` and applied to the whole image with ``nafrestore.restore`` (fp32).

Writes ``OUT.json`` (settings, per-method summaries overall and per camera, per-image values) and ``OUT.md`` (the
command, then tables of mean PSNR and SSIM overall and per camera). ``estimate_sigma`` needs PyWavelets (in the
project's test extras, which ``make install`` installs).

    python scripts/bench_real_noise.py /data/polyu/noisy /data/polyu/clean \\
        --model nafrestore/weights/lka-nafnet-w12-denoise-real.safetensors --out bench/real-noise
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

import nafrestore
from nafrestore.data.io import load_image
from nafrestore.metrics import psnr, ssim

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
NLM_FACTOR = 8.0  # h = NLM_FACTOR * estimate_sigma (0-255 scale); see the module docstring
Method = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB


def find_pairs(noisy_dir: Path, clean_dir: Path) -> list[tuple[str, Path, Path]]:
    """(stem, noisy path, clean path) for every stem present in both folders, sorted by stem."""

    def by_stem(folder: Path) -> dict[str, Path]:
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        return {p.stem: p for p in sorted(files)}

    noisy, clean = by_stem(noisy_dir), by_stem(clean_dir)
    stems = sorted(set(noisy) & set(clean))
    if not stems:
        sys.exit(f"no image stem is in both {noisy_dir} and {clean_dir}")
    for label, missing in (("clean", set(noisy) - set(clean)), ("noisy", set(clean) - set(noisy))):
        if missing:
            print(f"warning: {len(missing)} images have no {label} partner and are skipped", file=sys.stderr)
    return [(s, noisy[s], clean[s]) for s in stems]


def camera_of(stem: str) -> str:
    return stem.split("_", 1)[0]


def read_uint8(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, read with the project's reader (EXIF-oriented, gray stacked to 3 channels)."""
    return np.rint(load_image(path).rgb * 255.0).astype(np.uint8)


def nlm_strength(rgb: np.ndarray, factor: float = NLM_FACTOR) -> float:
    """h for OpenCV's non-local means: ``factor * estimate_sigma(rgb, channel_axis=-1, average_sigmas=True)``."""
    from skimage.restoration import estimate_sigma  # needs PyWavelets

    return factor * float(estimate_sigma(rgb, channel_axis=-1, average_sigmas=True))


def nlm_method(factor: float) -> Method:
    def run(rgb: np.ndarray) -> np.ndarray:
        h = nlm_strength(rgb, factor)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)[:, :, ::-1]

    return run


def model_method(source: str) -> Method:
    model = nafrestore.load_model(source, device="cpu")

    def run(rgb: np.ndarray) -> np.ndarray:
        return nafrestore.restore(model, rgb)

    return run


def score(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of one uint8 RGB pair (nafrestore.metrics, 8-bit, RGB, no crop)."""
    x = torch.from_numpy(np.ascontiguousarray(pred)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.ascontiguousarray(gt)).permute(2, 0, 1)[None]
    return float(psnr(x, y)[0]), float(ssim(x, y)[0])


def summarise(rows: list[dict]) -> dict:
    """Mean PSNR/SSIM overall and per camera (infinite PSNRs of identical images left out of the mean)."""

    def mean(group: list[dict]) -> dict:
        finite = [r["psnr"] for r in group if np.isfinite(r["psnr"])]
        return {
            "psnr": float(np.mean(finite)) if finite else float("inf"),
            "ssim": float(np.mean([r["ssim"] for r in group])),
            "n": len(group),
        }

    cameras = sorted({r["camera"] for r in rows})
    return {
        "overall": mean(rows),
        "per_camera": {c: mean([r for r in rows if r["camera"] == c]) for c in cameras},
    }


def run_method(name: str, method: Method | None, pairs: list[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    rows, t0 = [], time.perf_counter()
    for stem, noisy, clean in pairs:
        pred = noisy if method is None else method(noisy)
        p, s = score(pred, clean)
        rows.append({"name": stem, "camera": camera_of(stem), "psnr": p, "ssim": s})
    seconds = time.perf_counter() - t0
    result = {"method": name, **summarise(rows), "seconds": round(seconds, 1), "images": rows}
    print(f"{name}: PSNR {result['overall']['psnr']:.2f} dB, SSIM {result['overall']['ssim']:.4f} ({seconds:.0f} s)")
    return result


def markdown(results: list[dict], command: str, settings: dict) -> str:
    cameras = list(results[0]["per_camera"])
    per_camera = results[0]["per_camera"]
    head = ["method", f"all ({results[0]['overall']['n']})", *(f"{c} ({per_camera[c]['n']})" for c in cameras)]
    lines = [
        "# Real camera noise benchmark",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"{settings['n_images']} noisy/clean pairs matched by file stem; camera = first `_` field of the name. "
        "Mean over images, RGB rounded to 8 bits, no border crop (`nafrestore.metrics`). "
        f"NLM: OpenCV `fastNlMeansDenoisingColored(img, None, h, h, 7, 21)`, {settings['nlm']}.",
    ]
    for metric, unit, fmt in (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}")):
        lines += ["", f"**{unit}**", "", "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
        for r in results:
            values = [r["overall"][metric], *(r["per_camera"][c][metric] for c in cameras)]
            lines.append(f"| {r['method']} | " + " | ".join(fmt.format(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("noisy_dir", type=Path)
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("--model", action="append", default=[], help="run dir, .pt or .safetensors (repeatable)")
    parser.add_argument("--label", action="append", default=[], help="table label of each --model, in order")
    parser.add_argument("--out", default="bench/real-noise", help="output path without extension")
    parser.add_argument("--nlm-factor", type=float, default=NLM_FACTOR, help="h = factor * estimate_sigma")
    parser.add_argument("--no-nlm", action="store_true", help="skip the NLM baseline (it takes about a minute)")
    parser.add_argument("--no-input", action="store_true", help="skip the noisy-input row (quick model checks)")
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs (quick checks)")
    args = parser.parse_args()
    if args.label and len(args.label) != len(args.model):
        parser.error("give one --label per --model, or none")
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    command = "python " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])

    pairs = [(s, read_uint8(n), read_uint8(c)) for s, n, c in find_pairs(args.noisy_dir, args.clean_dir)]
    pairs = pairs[: args.limit] if args.limit else pairs
    results = [] if args.no_input else [run_method("noisy input", None, pairs)]
    nlm = f"h = {args.nlm_factor:g} * estimate_sigma(img, channel_axis=-1, average_sigmas=True) on the 0-255 scale"
    if not args.no_nlm:
        results.append(run_method(f"NLM (blind, h = {args.nlm_factor:g} sigma)", nlm_method(args.nlm_factor), pairs))
    labels = args.label or args.model
    for label, source in zip(labels, args.model, strict=True):
        results.append(run_method(label, model_method(source), pairs))

    settings = {
        "noisy_dir": str(args.noisy_dir),
        "clean_dir": str(args.clean_dir),
        "n_images": len(pairs),
        "metrics": "nafrestore.metrics psnr/ssim, RGB, 8-bit, crop_border 0",
        "nlm": nlm,
        "models": dict(zip(labels, args.model, strict=True)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "settings": settings, "results": results}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results, command, settings))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
