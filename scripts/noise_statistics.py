"""What noise looks like: real camera noise (degraded/clean pairs) beside the synthetic noise the models train on.

    python scripts/noise_statistics.py ../shared/data/polyu-real-noise/noisy ../shared/data/polyu-real-noise/clean \\
        --out bench/noise-statistics

For every source the residual ``degraded - clean`` (RGB, 8-bit levels) is described by:

* ``std``: its standard deviation over all pixels and channels;
* ``lag 1 / 2 / 4``: the correlation of horizontal neighbours 1, 2 and 4 pixels apart (mean over channels): camera
  noise is spatially correlated by demosaicing and in-camera noise reduction, Gaussian noise is not;
* ``luma / chroma``: the std of the residual's luma (the channel mean) over the std of its chroma (each channel
  minus that mean); blotchy colour noise lowers it;
* ``gate level``: the noise level ``nafrestore.models.layers.noise_level`` estimates from the degraded image alone
  (the wavelet MAD estimate, 0-255 scale; mean over images), the figure ``residual_highpass_gate`` compares.

Real pairs: each group (first ``_`` field of the name, the camera for PolyU) of ``INPUT_DIR``/``CLEAN_DIR``,
matched by stem. Synthetic: ``SOURCES``, each a degradation spec applied once (seeded per photograph) to the 4
validation photographs of the sample split. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nafrestore.data.sample import sample_images
from nafrestore.models.layers import noise_level

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import command_line, write_results  # noqa: E402  (sibling scripts: one way to record results)
from bench_real_pairs import STRONG_NOISE, degraded, find_pairs, group_of, read_uint8, to_uint8  # noqa: E402

LAGS = (1, 2, 4)
# The synthetic noise of the default models' training mixes and of the strong-noise check, by name.
SOURCES: dict[str, list[dict]] = {
    "mild camera noise, shot 1e-3, NR 0.5 / chroma 1, JPEG 90 (v1 and v2 mild branch)": [
        {"type": "camera_noise", "shot_noise": 1e-3, "color_correction": False, "noise_reduction": 0.5,
         "chroma_noise_reduction": 1.0},
        {"type": "jpeg", "quality": 90},
    ],
    "mild camera noise, shot 4e-3 (the mild branch's top), NR 0.5 / chroma 1, JPEG 90": [
        {"type": "camera_noise", "shot_noise": 4e-3, "color_correction": False, "noise_reduction": 0.5,
         "chroma_noise_reduction": 1.0},
        {"type": "jpeg", "quality": 90},
    ],
    **{
        f"low-light camera noise, shot {shot:g}, exposure 0.4, NR 0.7 / chroma 2.5, JPEG 90 (v2 strong branch)": [
            {"type": "camera_noise", "shot_noise": shot, "exposure_mean": 0.4, "exposure_std": 0.0,
             "color_correction": False, "noise_reduction": 0.7, "chroma_noise_reduction": 2.5},
            {"type": "jpeg", "quality": 90},
        ]
        for shot in (0.01, 0.05)
    },
    **{f"check: {name}": spec for name, spec in STRONG_NOISE.items()},
    "gaussian_noise sigma 10": [{"type": "gaussian_noise", "sigma": 10}],
}  # fmt: skip


def residual_statistics(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The statistics of ``degraded - clean`` over (degraded, clean) uint8 (H, W, 3) pairs (see the docstring)."""
    residuals = [d.astype(np.float64) - c.astype(np.float64) for d, c in pairs]
    flat = np.concatenate([r.reshape(-1, 3) for r in residuals])
    stats = {"std": float(flat.std())}
    for lag in LAGS:
        corr = []
        for r in residuals:
            a, b = r[:, :-lag].reshape(-1, 3), r[:, lag:].reshape(-1, 3)
            corr += [np.corrcoef(a[:, c], b[:, c])[0, 1] for c in range(3) if a[:, c].std() > 0 and b[:, c].std() > 0]
        stats[f"lag {lag}"] = float(np.mean(corr)) if corr else float("nan")
    luma = flat.mean(axis=1, keepdims=True)
    stats["luma / chroma"] = float(luma.std() / max((flat - luma).std(), 1e-12))
    levels = [255.0 * float(noise_level(torch.from_numpy(d.astype(np.float32) / 255).permute(2, 0, 1)[None])[0])
              for d, _ in pairs]  # fmt: skip
    stats["gate level"] = float(np.mean(levels))
    stats["n"] = len(pairs)
    return stats


def real_sources(input_dir: Path, clean_dir: Path) -> dict[str, dict[str, float]]:
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for stem, degraded_path, clean_path in find_pairs(input_dir, clean_dir):
        groups.setdefault(group_of(stem), []).append((read_uint8(degraded_path), read_uint8(clean_path)))
    return {f"real: {input_dir.parent.name} {group}": residual_statistics(p) for group, p in sorted(groups.items())}


def synthetic_sources(seed: int) -> dict[str, dict[str, float]]:
    photos = sample_images("val")
    clean = [to_uint8(img) for _, img in photos]
    return {
        name: residual_statistics([(d, c) for (_, d), c in zip(degraded(photos, spec, seed), clean, strict=True)])
        for name, spec in SOURCES.items()
    }


def markdown(rows: dict[str, dict[str, float]], command: str) -> str:
    cols = ["std", *(f"lag {lag}" for lag in LAGS), "luma / chroma", "gate level"]
    lines = [
        "# Noise statistics: real camera noise beside the synthetic noise of the training mixes",
        "",
        f"Command:\n\n```bash\n{command}\n```\n",
        "Residual = degraded - clean in 8-bit levels (RGB); lag k: correlation of horizontal neighbours k pixels "
        "apart; luma / chroma: std of the channel mean over std of the rest; gate level: `noise_level` of the "
        "degraded image (wavelet MAD, 0-255), what `residual_highpass_gate` compares. Synthetic rows: the 4 "
        "validation photographs, one seeded draw each. (n) = images.",
        "",
        "| source (n) | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---:" for _ in cols) + " |",
    ]
    for name, s in rows.items():
        lines.append(f"| {name} ({s['n']}) | " + " | ".join(f"{s[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input_dir", type=Path, nargs="?", help="degraded images of real pairs (optional)")
    parser.add_argument("clean_dir", type=Path, nargs="?", help="their clean references, same stems")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/noise-statistics"), help="OUT.json and OUT.md")
    args = parser.parse_args()
    if (args.input_dir is None) != (args.clean_dir is None):
        parser.error("give both INPUT_DIR and CLEAN_DIR, or neither")
    rows = real_sources(args.input_dir, args.clean_dir) if args.input_dir else {}
    rows.update(synthetic_sources(args.seed))
    command = command_line()
    write_results(args.out.with_suffix(".json"), {"command": command, "sources": rows}, markdown(rows, command))


if __name__ == "__main__":
    main()
