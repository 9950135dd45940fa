"""Real degraded/clean pairs: score the input, a classical baseline and trained models, for noise or for blur.

    python scripts/bench_real_pairs.py noise ../shared/data/polyu-real-noise/noisy \\
        ../shared/data/polyu-real-noise/clean --model default --out bench/real-noise
    python scripts/bench_real_pairs.py blur ../shared/data/gopro-motion-blur/blur \\
        ../shared/data/gopro-motion-blur/sharp --model deblur --model default --out bench/real-blur

Pairs ``INPUT_DIR/NAME.*`` with ``CLEAN_DIR/NAME.*`` by file stem and, for each method, computes the PSNR and SSIM
of every image against its clean reference with ``nafrestore.metrics`` (RGB, rounded to 8 bits, no border crop: the
project's conventions). An image's group is the first ``_``-separated field of its name: the camera of a PolyU
crop (``Canon5D2_5_160_3200_chair_11``), the video of a GoPro pair (``GOPR0374_11_00_...``).

Methods, in this order:

* the input itself (``noisy input`` / ``blurry input``);
* the task's classical baseline:

  - noise: ``NLM (blind)``, OpenCV ``fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)`` with ``h = 8 * sigma``
    per image, ``sigma = skimage.restoration.estimate_sigma(rgb_uint8, channel_axis=-1, average_sigmas=True)``
    (the wavelet MAD estimate on the 0-255 scale). The factor 8 is needed because that estimate only sees the
    finest wavelet scale, where camera JPEG compression and demosaicing have removed most of the noise (it reads
    0.1-1.6 levels on PolyU): with ``h = sigma`` NLM leaves the images almost unchanged. ``--nlm-factor``
    changes the 8.
  - blur: ``unsharp mask``, ``img + amount * (img - GaussianBlur(img, radius))``, with the radius and amount that
    give the best mean PSNR on the training photographs of the sample split blurred by ``camera_shake`` with its
    default ranges (seeded per photograph): tuned there, never on the pairs it is scored on.

* each ``--model``: a registry name, run directory, checkpoint (``.pt``) or ``.safetensors`` export, loaded with
  ``nafrestore.load_model`` and applied to the whole image with ``nafrestore.restore`` (fp32).

Two checks on the 4 held-out validation photographs of the sample split (never trained on) follow, for every
method: **no harm**, the photographs restored without any degradation, scored against themselves (lowest and mean
PSNR; each ``--no-harm-dir`` adds a folder of clean photographs, e.g. PolyU's ``clean/`` or the textured BSDS500
training photographs); then the task's synthetic
degradations, one fixed draw per photograph, seeded by its name: for blur, **camera shake** of each size class
(small 3-13 px, medium 13-27 px, large 27-41 px); for noise, **strong camera noise** at three levels
(``STRONG_NOISE``: shot noise 0.02, 0.05 and 0.1 through the camera round trip, blotchy chroma, JPEG 90; inputs of
about 25, 20 and 18 dB), scored beside blind NLM.

Each check also measures **colour shift**: the PSNR between the area-downscaled input and output (the mean of each
f x f block), where noise and fine texture average out and what is left is colour and brightness of larger areas:
f = 8 for the no-harm checks (the photograph against its output) and f = 16 for the synthetic degradations (the
degraded input against its output, as the strong-noise colour check of issue 31 does); mean, lowest, the lowest
named, and how many photographs come out below the baseline's on the same photograph.

Writes ``OUT.json`` (settings, per-method summaries overall and per group, per-image values, the checks) and
``OUT.md`` (the command, then the tables; per pair too when there are at most 20 pairs). ``estimate_sigma`` needs
PyWavelets (in the project's test extras, which ``make install`` installs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage.restoration import estimate_sigma

import nafrestore
from nafrestore.data.degradations import build_degradation, seed_for
from nafrestore.data.io import list_images, load_image
from nafrestore.data.sample import sample_images
from nafrestore.metrics import psnr, ssim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import command_line  # noqa: E402  (a sibling script: one way to record the command)

NLM_FACTOR = 8.0  # h = NLM_FACTOR * estimate_sigma (0-255 scale); see the module docstring
USM_RADII = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
USM_AMOUNTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SHAKE_CLASSES = {"small": [3, 13], "medium": [13, 27], "large": [27, 41]}
# Strong real noise (high ISO, low light): a large shot noise (Brooks et al. draw up to 0.012) with the read noise
# that goes with it, in-camera luma noise reduction (0.5 px) and the blotchy chroma that demosaicing and chroma
# noise reduction leave (the chroma noise low-passed at 2 px), then JPEG.
STRONG_NOISE = {
    f"strong noise (shot {shot:g})": [
        {
            "type": "camera_noise",
            "shot_noise": shot,
            "color_correction": False,
            "noise_reduction": 0.5,
            "chroma_noise_reduction": 2.0,
        },
        {"type": "jpeg", "quality": 90},
    ]
    for shot in (0.02, 0.05, 0.1)
}
PER_PAIR_LIMIT = 20  # per-pair tables in the markdown up to this many pairs
LOWEST_LISTED = 3  # the no-harm checks name each method's lowest photographs
Method = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 RGB -> (H, W, 3) uint8 RGB


@dataclass
class Task:
    input_label: str
    baseline: Callable[[argparse.Namespace], tuple[str, Method, str]]  # -> (label, method, description)
    degradations: dict[str, list[dict]]  # the synthetic checks: label -> degradation spec


def find_pairs(input_dir: Path, clean_dir: Path) -> list[tuple[str, Path, Path]]:
    """(stem, input path, clean path) for every stem present in both folders, sorted by stem."""

    def by_stem(folder: Path) -> dict[str, Path]:
        return {p.stem: p for p in list_images(folder, recursive=False)}

    degraded, clean = by_stem(input_dir), by_stem(clean_dir)
    stems = sorted(set(degraded) & set(clean))
    if not stems:
        sys.exit(f"no image stem is in both {input_dir} and {clean_dir}")
    for label, missing in (("clean", set(degraded) - set(clean)), ("input", set(clean) - set(degraded))):
        if missing:
            print(f"warning: {len(missing)} images have no {label} partner and are skipped", file=sys.stderr)
    return [(s, degraded[s], clean[s]) for s in stems]


def group_of(stem: str) -> str:
    return stem.split("_", 1)[0]


#: The area-downscaling factor of the colour-shift PSNR: no-harm checks, the synthetic degradations.
COLOUR_FACTOR = {"no harm": 8, "degraded": 16}


def read_uint8(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, read with the project's reader (EXIF-oriented, gray stacked to 3 channels)."""
    return to_uint8(load_image(path).rgb)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Baselines


def nlm_method(factor: float) -> Method:
    def run(rgb: np.ndarray) -> np.ndarray:
        h = factor * float(estimate_sigma(rgb, channel_axis=-1, average_sigmas=True))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        return cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)[:, :, ::-1]

    return run


def nlm_baseline(args: argparse.Namespace) -> tuple[str, Method, str]:
    description = (
        f"NLM: OpenCV `fastNlMeansDenoisingColored(img, None, h, h, 7, 21)`, h = {args.nlm_factor:g} * "
        "estimate_sigma(img, channel_axis=-1, average_sigmas=True) on the 0-255 scale"
    )
    return f"NLM (blind, h = {args.nlm_factor:g} sigma)", nlm_method(args.nlm_factor), description


def unsharp_mask(rgb: np.ndarray, radius: float, amount: float) -> np.ndarray:
    """``img + amount * (img - GaussianBlur(img, radius))`` on (H, W, 3) uint8, rounded back to uint8."""
    img = rgb.astype(np.float32) / 255.0
    blurred = cv2.GaussianBlur(img, (0, 0), radius, borderType=cv2.BORDER_REFLECT_101)
    return to_uint8(img + amount * (img - blurred))


def degraded(images: list[tuple[str, np.ndarray]], spec: list[dict], seed: int) -> list[tuple[str, np.ndarray]]:
    """Each (name, float image) degraded by ``spec`` (a degradation list), seeded by the name, as uint8."""
    degrade = build_degradation(spec)
    return [(name, to_uint8(degrade(img, np.random.default_rng(seed_for(name, seed))))) for name, img in images]


def usm_baseline(args: argparse.Namespace) -> tuple[str, Method, str]:
    """Unsharp masking with the radius and amount of best mean PSNR on the blurred training photographs."""
    train = sample_images("train")
    blurred = degraded(train, [{"type": "camera_shake"}], seed=0)
    clean = [to_uint8(img) for _, img in train]
    best = (-np.inf, 0.0, 0.0)
    for radius in USM_RADII:
        for amount in USM_AMOUNTS:
            mean = np.mean(
                [score(unsharp_mask(b, radius, amount), c)[0] for (_, b), c in zip(blurred, clean, strict=True)]
            )
            best = max(best, (float(mean), radius, amount))
    _, radius, amount = best
    description = (
        f"unsharp mask: `img + amount * (img - GaussianBlur(img, radius))`, radius {radius:g} px, amount "
        f"{amount:g}: the best mean PSNR ({best[0]:.2f} dB) over radii {list(USM_RADII)} and amounts "
        f"{list(USM_AMOUNTS)} on the {len(train)} training photographs of the sample split, each blurred by "
        "camera_shake (default ranges)"
    )
    print(description)
    return f"unsharp mask (r {radius:g}, amount {amount:g})", lambda rgb: unsharp_mask(rgb, radius, amount), description


TASKS = {
    "noise": Task("noisy input", nlm_baseline, STRONG_NOISE),
    "blur": Task(
        "blurry input",
        usm_baseline,
        {
            f"camera shake {label} ({lo}-{hi} px)": [{"type": "camera_shake", "size": [lo, hi]}]
            for label, (lo, hi) in SHAKE_CLASSES.items()
        },
    ),
}

# ----------------------------------------------------------------------------------------------------------------
# Scoring


def model_method(source: str) -> Method:
    model = nafrestore.load_model(source, device="cpu")

    def run(rgb: np.ndarray) -> np.ndarray:
        return nafrestore.restore(model, rgb)

    return run


def area_downscaled(rgb: np.ndarray, factor: int) -> np.ndarray:
    """(H, W, 3) -> (H // factor, W // factor, 3) float64: the mean of each factor x factor block (OpenCV's
    INTER_AREA for a whole factor; the last rows and columns that fill no block are left out), not rounded."""
    h, w = rgb.shape[0] // factor * factor, rgb.shape[1] // factor * factor
    blocks = rgb[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, rgb.shape[2])
    return blocks.mean(axis=(1, 3))


def colour_psnr(output: np.ndarray, reference: np.ndarray, factor: int) -> float:
    """PSNR (dB, peak 255) between the ``factor``-times area-downscaled ``output`` and ``reference``, uint8 RGB."""
    mse = float(np.mean((area_downscaled(output, factor) - area_downscaled(reference, factor)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def score(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """PSNR and SSIM of one uint8 RGB pair (nafrestore.metrics, 8-bit, RGB, no crop)."""
    x = torch.from_numpy(np.ascontiguousarray(pred)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.ascontiguousarray(gt)).permute(2, 0, 1)[None]
    return float(psnr(x, y)[0]), float(ssim(x, y)[0])


def mean_scores(rows: list[dict]) -> dict:
    """Mean PSNR/SSIM of rows (infinite PSNRs of identical images left out of the mean), lowest PSNR, count, and
    the ``LOWEST_LISTED`` lowest images as ``[name, PSNR]``; with colour-shift rows, the same of those and every
    image's value (``colour_values``, for the comparison with the baseline)."""
    finite = [r["psnr"] for r in rows if np.isfinite(r["psnr"])]
    lowest = sorted(rows, key=lambda r: r["psnr"])[:LOWEST_LISTED]
    scores = {
        "psnr": float(np.mean(finite)) if finite else float("inf"),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "lowest_psnr": float(min(r["psnr"] for r in rows)),
        "n": len(rows),
        "lowest": [[r["name"], r["psnr"]] for r in lowest],
    }
    if rows and "colour" in rows[0]:
        colours = [r["colour"] for r in rows if np.isfinite(r["colour"])]
        scores |= {
            "colour": float(np.mean(colours)) if colours else float("inf"),
            "colour_lowest": float(min(r["colour"] for r in rows)),
            "colour_lowest_names": [[r["name"], r["colour"]] for r in sorted(rows, key=lambda r: r["colour"])][
                :LOWEST_LISTED
            ],
            "colour_values": {r["name"]: r["colour"] for r in rows},
        }
    return scores


def score_all(
    method: Method | None, pairs: list[tuple[str, np.ndarray, np.ndarray]], colour_factor: int | None = None
) -> list[dict]:
    """Each pair's PSNR and SSIM against its clean image, and with ``colour_factor`` the colour-shift PSNR of the
    output against the input at that downscaling."""
    rows = []
    for stem, degraded, clean in pairs:
        out = degraded if method is None else method(degraded)
        p, s = score(out, clean)
        row = {"name": stem, "group": group_of(stem), "psnr": p, "ssim": s}
        if colour_factor is not None:
            row["colour"] = colour_psnr(out, degraded, colour_factor)
        rows.append(row)
    return rows


def run_method(name: str, method: Method | None, pairs: list, checks: dict[str, list]) -> dict:
    """Scores a method on the real pairs and on each check's pairs (``{check: [(name, input, clean), ...]}``)."""
    t0 = time.perf_counter()
    rows = score_all(method, pairs)
    seconds = time.perf_counter() - t0
    groups = sorted({r["group"] for r in rows})
    result = {
        "method": name,
        "overall": mean_scores(rows),
        "per_group": {g: mean_scores([r for r in rows if r["group"] == g]) for g in groups},
        "seconds": round(seconds, 1),
        "images": rows,
        "checks": {
            check: mean_scores(score_all(method, check_pairs, colour_factor(check)))
            for check, check_pairs in checks.items()
        },
    }
    print(f"{name}: PSNR {result['overall']['psnr']:.2f} dB, SSIM {result['overall']['ssim']:.4f} ({seconds:.0f} s)")
    return result


def colour_factor(check: str) -> int:
    """The colour-shift downscaling of a check, by its label (:data:`COLOUR_FACTOR`)."""
    return COLOUR_FACTOR["no harm" if check.startswith("no harm") else "degraded"]


def build_checks(task: Task, no_harm_dirs: list[Path]) -> dict[str, list]:
    """The held-out checks: no harm on the validation photographs (and each of ``no_harm_dirs``), the task's
    degradations."""
    val = sample_images("val")
    clean = [(name, to_uint8(img)) for name, img in val]
    checks = {"no harm, 4 validation photographs": [(n, c, c) for n, c in clean]}
    for folder in no_harm_dirs:
        photos = [(p.stem, read_uint8(p)) for p in list_images(folder, recursive=False)]
        checks[f"no harm, {len(photos)} photographs of {folder}"] = [(n, c, c) for n, c in photos]
    for label, spec in task.degradations.items():
        checks[label] = [(n, d, c) for (n, d), (_, c) in zip(degraded(val, spec, seed=0), clean, strict=True)]
    return checks


# ----------------------------------------------------------------------------------------------------------------
# Report


def markdown(task_name: str, results: list[dict], command: str, settings: dict) -> str:
    groups = list(results[0]["per_group"])
    first = results[0]
    head = ["method", f"all ({first['overall']['n']})", *(f"{g} ({first['per_group'][g]['n']})" for g in groups)]
    lines = [
        f"# Real {task_name} benchmark",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"{settings['n_images']} degraded/clean pairs matched by file stem; group = first `_` field of the name. "
        "Mean over images, RGB rounded to 8 bits, no border crop (`nafrestore.metrics`). "
        f"Baseline: {settings['baseline']}.",
    ]
    for metric, unit, fmt in (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.4f}")):
        lines += ["", f"**{unit}**", "", "| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
        for r in results:
            values = [r["overall"][metric], *(r["per_group"][g][metric] for g in groups)]
            lines.append(f"| {r['method']} | " + " | ".join(fmt.format(v) for v in values) + " |")
    if first["overall"]["n"] <= PER_PAIR_LIMIT:
        names = [row["name"] for row in first["images"]]
        lines += [
            "",
            "**PSNR (dB) per pair**" + (", and each method's lowest gain over the input" * settings["input_row"]),
            "",
        ]
        lines += ["| pair | " + " | ".join(r["method"] for r in results) + " |"]
        lines += ["| --- |" + " ---: |" * len(results)]
        for i, name in enumerate(names):
            lines.append(f"| {name} | " + " | ".join(f"{r['images'][i]['psnr']:.2f}" for r in results) + " |")
        if settings["input_row"]:  # gains are over the input row; with --no-input there is none
            worst = [
                min(r["images"][i]["psnr"] - first["images"][i]["psnr"] for i in range(len(names))) for r in results
            ]
            lines.append("| lowest gain over the input | " + " | ".join(f"{w:+.2f}" for w in worst) + " |")
    checks = list(first["checks"])
    lines += [
        "",
        "**Held-out checks** (the sample split's validation photographs, never trained on): PSNR (dB) mean / "
        "lowest, then mean SSIM. No harm scores a clean photograph's output against the photograph itself.",
        "",
        "| method | " + " | ".join(checks) + " |",
        "| --- |" + " ---: |" * len(checks),
    ]
    for r in results:
        cells = [
            f"{r['checks'][c]['psnr']:.2f} / {r['checks'][c]['lowest_psnr']:.2f}, {r['checks'][c]['ssim']:.4f}"
            for c in checks
        ]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    restored = results[1:] if settings["input_row"] else results  # the input row is the photograph itself
    lines += colour_table(restored, checks, settings.get("baseline_label"))
    for c in (c for c in checks if c.startswith("no harm")):
        lines += ["", f"Lowest in {c} (PSNR; colour shift):", ""]
        for r in restored:
            worst = ", ".join(f"{name} {value:.2f}" for name, value in r["checks"][c]["lowest"])
            colour = ", ".join(f"{name} {value:.2f}" for name, value in r["checks"][c]["colour_lowest_names"])
            lines.append(f"- {r['method']}: {worst}; colour {colour}")
    return "\n".join(lines) + "\n"


def colour_table(results: list[dict], checks: list[str], baseline: str | None) -> list[str]:
    """The colour-shift table: per method and check, mean / lowest, and how many photographs come out below the
    baseline's colour-shift PSNR on the same photograph."""
    base = next((r for r in results if r["method"] == baseline), None)
    factors = ", ".join(f"{f}x for {kind}" for kind, f in COLOUR_FACTOR.items())
    lines = [
        "",
        f"**Colour shift**: PSNR (dB) of the area-downscaled input against the output ({factors}), mean / lowest"
        + (f"; then the photographs below {baseline}'s on the same photograph" if base else "")
        + ". Higher is less shift; noise and texture average out at that scale.",
        "",
        "| method | " + " | ".join(checks) + " |",
        "| --- |" + " ---: |" * len(checks),
    ]
    for r in results:
        cells = []
        for c in checks:
            scores = r["checks"][c]
            cell = f"{scores['colour']:.2f} / {scores['colour_lowest']:.2f}"
            if base is not None and r is not base:
                ref = base["checks"][c]["colour_values"]
                below = sum(v < ref[name] for name, v in scores["colour_values"].items())
                cell += f", {below} of {scores['n']} below"
            cells.append(cell)
        lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("input_dir", type=Path, help="degraded images (noisy or blurry)")
    parser.add_argument("clean_dir", type=Path)
    parser.add_argument("--model", action="append", default=[], help="name, run dir, .pt or .safetensors (repeat)")
    parser.add_argument("--label", action="append", default=[], help="table label of each --model, in order")
    parser.add_argument("--out", default=None, help="output path without extension (default bench/real-TASK)")
    parser.add_argument("--nlm-factor", type=float, default=NLM_FACTOR, help="noise: h = factor * estimate_sigma")
    parser.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")
    parser.add_argument(
        "--no-input", action="store_true", help="skip the input row and the lowest-gain row (quick model checks)"
    )
    parser.add_argument(
        "--no-harm-dir", type=Path, action="append", default=[], help="clean photographs for a no-harm check (repeat)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads (default: theirs)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs (quick checks)")
    args = parser.parse_args()
    if args.label and len(args.label) != len(args.model):
        parser.error("give one --label per --model, or none")
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    task = TASKS[args.task]
    command = command_line()

    pairs = [(s, read_uint8(n), read_uint8(c)) for s, n, c in find_pairs(args.input_dir, args.clean_dir)]
    pairs = pairs[: args.limit] if args.limit else pairs
    checks = build_checks(task, args.no_harm_dir)
    results = [] if args.no_input else [run_method(task.input_label, None, pairs, checks)]
    baseline, baseline_label = "none", None
    if not args.no_baseline:
        baseline_label, method, baseline = task.baseline(args)
        results.append(run_method(baseline_label, method, pairs, checks))
    labels = args.label or args.model
    for label, source in zip(labels, args.model, strict=True):
        results.append(run_method(label, model_method(source), pairs, checks))

    settings = {
        "task": args.task,
        "input_dir": str(args.input_dir),
        "clean_dir": str(args.clean_dir),
        "n_images": len(pairs),
        "input_row": not args.no_input,
        "metrics": "nafrestore.metrics psnr/ssim, RGB, 8-bit, crop_border 0",
        "baseline": baseline,
        "baseline_label": baseline_label,
        "models": dict(zip(labels, args.model, strict=True)),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out or f"bench/real-{args.task}")
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": command, "settings": settings, "results": results}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(args.task, results, command, settings))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
