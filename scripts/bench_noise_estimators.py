"""Blind noise-level estimates on clean textured photographs against noisy ones: which estimate can a gate trust?

    python scripts/bench_noise_estimators.py --data ../shared/data --out bench/noise-estimators

A noise gate (the default model's pair, ``models/gated.py``) needs an estimate that reads clean photographs low,
however much fine texture they hold, and noisy ones high. Each candidate reads, on the 0-255 scale:

* clean photographs: the 200 BSDS500 training photographs (foliage, water, fur, gravel; film scans with mild grain
  and old JPEG), PolyU's 100 clean crops and the 4 validation photographs of the sample split;
* real mild camera noise: PolyU's 100 noisy crops;
* strong synthetic camera noise (``bench_real_pairs.STRONG_NOISE``, shot noise 0.02 / 0.05 / 0.1, one fixed draw per
  photograph) on the validation photographs and on every 8th BSDS photograph;
* white Gaussian noise, sigma 5 and 10, on every 8th BSDS photograph (the estimate should read about sigma).

For each candidate the table gives min / median / 98th percentile / max per set, and the **overlap**: how many clean
photographs read at or above the lowest reading of strong camera noise at shot 0.02 (the weakest strong level) on
the validation photographs, i.e. would be taken for strongly noisy by a gate set to pass all of those. Candidates:

* ``wavelet``: ``layers.noise_level``, the median absolute diagonal detail at the second Haar scale over the whole
  image (the gate of the defaults v2-v4);
* ``wavelet scale 1``: scikit-image's ``estimate_sigma`` (the same rule at the finest scale);
* ``quiet blocks, RGB`` / ``chroma`` / ``both``: ``layers.quiet_block_noise_level`` with ``bands`` ``rgb`` (the
  second-scale RGB detail of 32 px blocks, their lower quartile), ``chroma`` (the opponent chroma's third-scale
  detail) and ``both`` (per block the lower of the two: the default v5's gate);
* ``quiet blocks, both, 10 %``: the same with the 10th percentile of the blocks.

Writes OUT.json (per image readings) and OUT.md (the tables). Images are read with the project's reader.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import estimate_sigma

from nafrestore.data.io import list_images
from nafrestore.data.sample import sample_images
from nafrestore.models.layers import noise_level, quiet_block_noise_level

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import command_line  # noqa: E402  (sibling scripts: one way to record the command)
from bench_real_pairs import STRONG_NOISE, degraded, read_uint8, to_uint8  # noqa: E402

Estimate = Callable[[np.ndarray], float]  # (H, W, 3) uint8 RGB -> level on the 0-255 scale


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255.0


CANDIDATES: dict[str, Estimate] = {
    "wavelet (v2-v4 gate)": lambda rgb: 255.0 * float(noise_level(_tensor(rgb))[0]),
    "wavelet scale 1 (skimage)": lambda rgb: float(estimate_sigma(rgb, channel_axis=-1, average_sigmas=True)),
    "quiet blocks, RGB": lambda rgb: 255.0 * float(quiet_block_noise_level(_tensor(rgb), bands="rgb")[0]),
    "quiet blocks, chroma": lambda rgb: 255.0 * float(quiet_block_noise_level(_tensor(rgb), bands="chroma")[0]),
    "quiet blocks, both (v5 gate)": lambda rgb: 255.0 * float(quiet_block_noise_level(_tensor(rgb))[0]),
    "quiet blocks, both, 10 %": lambda rgb: 255.0 * float(quiet_block_noise_level(_tensor(rgb), quantile=0.1)[0]),
}
CLEAN_SETS = ("clean: BSDS500 train (200)", "clean: PolyU clean (100)", "clean: validation (4)")
REFERENCE_SET = "strong 0.02: validation"


def image_sets(data: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Set label -> [(name, (H, W, 3) uint8 RGB)], in the order of the tables."""
    folder = lambda sub: [(p.stem, read_uint8(p)) for p in list_images(data / sub, recursive=False)]  # noqa: E731
    bsds, polyu_clean = folder("bsds500-train"), folder("polyu-real-noise/clean")
    val = sample_images("val")
    sets = {
        CLEAN_SETS[0]: bsds,
        CLEAN_SETS[1]: polyu_clean,
        CLEAN_SETS[2]: [(n, to_uint8(img)) for n, img in val],
        "real mild noise: PolyU noisy (100)": folder("polyu-real-noise/noisy"),
    }
    bsds_8 = [(n, img.astype(np.float32) / 255.0) for n, img in bsds[::8]]
    for label, spec in STRONG_NOISE.items():
        shot = label.split("shot ")[1].rstrip(")")
        sets[f"strong {shot}: validation"] = degraded(val, spec, seed=0)
        sets[f"strong {shot}: BSDS every 8th"] = degraded(bsds_8, spec, seed=0)
    for sigma in (5, 10):
        spec = [{"type": "gaussian_noise", "sigma": sigma}]
        sets[f"white sigma {sigma}: BSDS every 8th"] = degraded(bsds_8, spec, seed=0)
    return sets


def summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "min": float(a.min()),
        "median": float(np.median(a)),
        "p98": float(np.percentile(a, 98)),
        "max": float(a.max()),
    }


def markdown(command: str, readings: dict[str, dict[str, dict[str, float]]]) -> str:
    sets = list(next(iter(readings.values())))
    lines = [
        "# Noise-level estimates: clean textured photographs against noisy ones",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        "Levels on the 0-255 scale. **Overlap**: clean photographs (of "
        f"{sum(len(readings[next(iter(readings))][s]) for s in CLEAN_SETS)}) reading at or above the lowest reading of "
        f"`{REFERENCE_SET}` (the weakest strong noise the strong network must get), with that reading: the photographs "
        "a gate set to pass all strong noise would take for strongly noisy. Then, per set, min / median / 98th "
        "percentile / max.",
        "",
        "| estimate | overlap | " + " | ".join(sets) + " |",
        "| --- | ---: |" + " ---: |" * len(sets),
    ]
    for name, per_set in readings.items():
        floor = min(per_set[REFERENCE_SET].values())
        clean = [v for s in CLEAN_SETS for v in per_set[s].values()]
        overlap = sum(v >= floor for v in clean)
        cells = []
        for s in sets:
            st = summary(list(per_set[s].values()))
            cells.append(f"{st['min']:.1f} / {st['median']:.1f} / {st['p98']:.1f} / {st['max']:.1f}")
        lines.append(f"| {name} | {overlap} (>= {floor:.1f}) | " + " | ".join(cells) + " |")
    for name, per_set in readings.items():
        top = sorted(per_set[CLEAN_SETS[0]].items(), key=lambda kv: -kv[1])[:5]
        lines += ["", f"- {name}: highest clean BSDS " + ", ".join(f"{n} {v:.1f}" for n, v in top)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", default="bench/noise-estimators", help="output path without extension")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = image_sets(args.data)
    readings = {
        name: {label: {n: estimate(img) for n, img in images} for label, images in sets.items()}
        for name, estimate in CANDIDATES.items()
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"command": command_line(), "readings": readings}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc["command"], readings))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
