"""How far tiled inference is from whole-image inference, on real photographs, with a real preset.

Runs the folded network on scikit-image's astronaut (512 x 512) and coffee (400 x 600) photographs, once whole
and once tiled for several tile/overlap settings, and prints the PSNR between the two outputs (float32, before
rounding). Weights are random with nonzero residual scales and norm affines (as after training), so the network is
far from the identity. Writes ``bench/tiling-<preset>.json``.

    python scripts/bench_tiling.py                         # lka-nafnet-w12
    python scripts/bench_tiling.py --preset nafnet-sidd-width32 --tiles 128 256
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nafrestore.config import load_config
from nafrestore.inference.api import run_model
from nafrestore.inference.fold import fold_for_inference
from nafrestore.loading import build_model

ROOT = Path(__file__).resolve().parents[1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1 / mse) if mse > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="lka-nafnet-w12")
    parser.add_argument("--tiles", nargs="+", type=int, default=[128, 192, 256])
    parser.add_argument("--overlaps", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--tlc", action="store_true", help="turn TLC on (training size from the config)")
    args = parser.parse_args()
    from skimage import data

    cfg = load_config(ROOT / "configs" / f"{args.preset}.yaml")
    torch.manual_seed(0)
    tlc = cfg.model.tlc_train_size if args.tlc or cfg.model.tlc else None
    net = build_model(cfg.model.name, cfg.model.args, tlc)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma", "scale")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    model = fold_for_inference(net.eval())
    rows = []
    for label, image in (("astronaut", data.astronaut()), ("coffee", data.coffee())):
        rgb = image.astype(np.float32) / 255
        whole = run_model(model, rgb)
        for tile in args.tiles:
            for overlap in args.overlaps:
                tiled = run_model(model, rgb, tile=tile, overlap=overlap)
                row = {
                    "image": label,
                    "size": list(rgb.shape[:2]),
                    "tile": tile,
                    "overlap": overlap,
                    "psnr_tiled_vs_whole_db": round(psnr(tiled, whole), 2),
                    "max_abs_diff": float(np.abs(tiled - whole).max()),
                    "psnr_output_vs_input_db": round(psnr(whole, rgb), 2),
                }
                rows.append(row)
                print(
                    f"{label:10s} {rgb.shape[0]}x{rgb.shape[1]}  tile {tile:4d} overlap {overlap:3d}: "
                    f"tiled vs whole {row['psnr_tiled_vs_whole_db']:6.2f} dB (max |diff| {row['max_abs_diff']:.4f}); "
                    f"output vs input {row['psnr_output_vs_input_db']:.2f} dB",
                    flush=True,
                )
    out = ROOT / "bench" / f"tiling-{args.preset}{'-tlc' if args.tlc else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"preset": args.preset, "tlc": bool(model.tlc_enabled), "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
