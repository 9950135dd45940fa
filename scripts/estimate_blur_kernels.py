"""Estimate the blur kernel of each blurry/sharp pair: what real camera shake looks like, to choose a recipe by.

    python scripts/estimate_blur_kernels.py ../shared/data/gopro-motion-blur/blur \\
        ../shared/data/gopro-motion-blur/sharp --out bench/real-blur-kernels

For each pair (matched by file stem, as ``bench_real_pairs.py`` pairs them) the one kernel ``k`` that best explains
``blur = k * sharp`` is found by regularised least squares in the Fourier domain, on the gradients of the grey
images in linear light (gamma 2.2, as the frames were averaged by the camera's exposure):

    K = sum_d conj(G_d S) G_d B / (sum_d |G_d S|^2 + lambda)

over the horizontal and vertical differences ``G_d``, with a Hann window against the wrap-around and ``lambda``
1e-3 of the mean power (a Wiener-style estimate; gradients because blur moves edges, not flat areas). A pair whose
blur is not one kernel (objects moving on their own) still gets the kernel of its dominant motion, with a strong
peak at the centre where most of the frame is still.

Reported per pair: the share of the kernel's mass within 1 px of the centre (the still share of the frame; a path
of K video frames puts about 1/K on each of its K dots). Writes ``OUT.md`` (the table and the command) and
``OUT.png`` (the kernels, 41 px each, brightest = peak): read the paths' lengths and shapes there (automatic
extents were tried and read the estimate's noise as path where no camera path stands out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import command_line  # noqa: E402  (sibling scripts: one way to record the command)
from bench_real_pairs import find_pairs  # noqa: E402  (and to pair the folders)

HALF = 20  # kernels are shown and measured within 41 x 41 px
GAMMA = 2.2


def estimate_kernel(blurry: np.ndarray, sharp: np.ndarray) -> np.ndarray:
    """(2 HALF + 1)^2 kernel, non-negative, sum 1, from two (H, W) float grey images in linear light."""
    side = min(blurry.shape)
    window = np.outer(np.hanning(side - 1), np.hanning(side - 1))
    num, den = 0.0, 0.0
    for axis in (0, 1):
        gb = np.diff(blurry[:side, :side], axis=axis)[: side - 1, : side - 1]
        gs = np.diff(sharp[:side, :side], axis=axis)[: side - 1, : side - 1]
        fb, fs = np.fft.fft2(gb * window), np.fft.fft2(gs * window)
        num = num + np.conj(fs) * fb
        den = den + np.abs(fs) ** 2
    full = np.fft.fftshift(np.real(np.fft.ifft2(num / (den + 1e-3 * den.mean()))))
    c = (side - 1) // 2
    kernel = np.clip(full[c - HALF : c + HALF + 1, c - HALF : c + HALF + 1], 0, None)
    return kernel / kernel.sum()


def read_linear_grey(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        sys.exit(f"cannot read {path}")
    return (image.astype(np.float64) / 255.0) ** GAMMA


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("blur_dir", type=Path)
    parser.add_argument("sharp_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/real-blur-kernels"))
    args = parser.parse_args()
    command = command_line()
    rows, tiles = [], []
    for stem, blur_path, sharp_path in find_pairs(args.blur_dir, args.sharp_dir):
        kernel = estimate_kernel(read_linear_grey(blur_path), read_linear_grey(sharp_path))
        centre = kernel[HALF - 1 : HALF + 2, HALF - 1 : HALF + 2].sum()
        rows.append(f"| {stem} | {centre:.2f} |")
        tiles.append(np.pad(kernel / kernel.max(), 1, constant_values=0.5))
    columns = 5
    tiles += [np.full_like(tiles[0], 0.5)] * (-len(tiles) % columns)
    grid = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    cv2.imwrite(str(png), np.rint(255 * grid).astype(np.uint8).repeat(3, 0).repeat(3, 1))
    text = [
        "# Blur kernels of the real pairs",
        "",
        "Command:",
        "",
        "```bash",
        command,
        "```",
        "",
        f"One kernel per pair, estimated from the pair in linear light (see the script's docstring); `{png.name}` "
        "shows them in this order, five to a row, 41 px each.",
        "",
        "| pair | mass within 1 px of the centre |",
        "| --- | ---: |",
        *rows,
    ]
    args.out.with_suffix(".md").write_text("\n".join(text) + "\n")
    print("\n".join(text[-len(rows) - 2 :]))
    print(f"wrote {args.out.with_suffix('.md')} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
