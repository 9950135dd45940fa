"""Peak memory (RSS) of restoring one large photograph on the CPU, measured in a fresh subprocess.

The parent writes a synthetic 6000x4000 8-bit JPEG (the astronaut photograph from scikit-image, upscaled, with
noise), then runs ``restore_files`` on it in a child process, which reports its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and time. Default model: the LKA-NAFNet preset with random
weights (memory does not depend on the weights). Writes ``bench/memory-cpu.json``.

    python scripts/bench_memory.py                                   # 6000x4000, lka-nafnet-w12, auto tiling
    python scripts/bench_memory.py --preset nafnet-sidd-width32 --tile 256
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_photo(path: Path, width: int, height: int) -> None:
    import cv2
    import numpy as np
    from skimage import data

    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    noisy = np.clip(photo.astype(np.int16) + rng.normal(0, 15, photo.shape).astype(np.int16), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), noisy[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    import torch

    from nafrestore.config import load_config
    from nafrestore.inference.batch import restore_files
    from nafrestore.inference.fold import fold_for_inference
    from nafrestore.loading import build_model

    baseline = _peak_mib()
    cfg = load_config(ROOT / "configs" / f"{args.preset}.yaml")
    tlc = cfg.model.tlc_train_size if cfg.model.tlc else None
    net = build_model(cfg.model.name, cfg.model.args, tlc).eval()
    model = fold_for_inference(net)
    del net
    after_model = _peak_mib()
    start = time.perf_counter()
    phases = {}
    if args.phases:  # the same steps as restore_files, one at a time, with the peak after each
        from nafrestore.data.io import load_image, save_image
        from nafrestore.inference.api import run_model

        image = load_image(args.image)
        phases["load_image"] = _peak_mib()
        rgb, image.rgb = image.rgb, None
        out = run_model(model, rgb, tile=args.tile, overlap=args.overlap)
        del rgb
        phases["restore"] = _peak_mib()
        save_image(Path(args.out_dir) / "photo.png", out, bit_depth=image.bit_depth, alpha=image.alpha)
        phases["save_image"] = _peak_mib()
        restored, failed = 1, []
    else:
        report = restore_files(
            model, [args.image], args.out_dir, overwrite=True, tile=args.tile, overlap=args.overlap, progress=False
        )
        restored, failed = len(report.restored), [f"{p}: {r}" for p, r in report.failed]
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    print(
        json.dumps(
            {
                "preset": args.preset,
                "tile": args.tile,
                "overlap": args.overlap,
                "threads": torch.get_num_threads(),
                "peak_rss_mib": round(peak, 1),
                "rss_after_imports_mib": round(baseline, 1),
                "rss_after_model_mib": round(after_model, 1),
                "seconds": round(seconds, 1),
                "peak_rss_after_phase_mib": {k: round(v, 1) for k, v in phases.items()},
                "restored": restored,
                "failed": failed,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--preset", default="lka-nafnet-w12")
    parser.add_argument("--tile", type=int, default=None, help="tile side (default: automatic tiling)")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "memory-cpu.json")
    parser.add_argument("--phases", action="store_true", help="load, restore and save step by step, peak after each")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.make:
        make_photo(args.image, args.width, args.height)
        return
    # This process stays small (standard library only): on Linux a child's ru_maxrss starts from its parent's RSS
    # at fork, so the photograph is made in one subprocess and restored in another.
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "photo.jpg"
        size = ["--width", str(args.width), "--height", str(args.height)]
        subprocess.run([sys.executable, __file__, "--make", "--image", str(image), *size], check=True)
        command = [sys.executable, __file__, "--child", "--image", str(image), "--out-dir", str(Path(tmp) / "out")]
        command += ["--preset", args.preset, "--overlap", str(args.overlap)]
        if args.tile:
            command += ["--tile", str(args.tile)]
        if args.phases:
            command += ["--phases"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"child failed:\n{result.stderr}")
        info = json.loads(result.stdout.strip().splitlines()[-1])
    info.update({"width": args.width, "height": args.height, "megapixels": args.width * args.height / 1e6})
    print(json.dumps(info, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=2))
    print(
        f"peak RSS {info['peak_rss_mib']:.0f} MiB (after imports {info['rss_after_imports_mib']:.0f} MiB) for "
        f"{args.width}x{args.height} ({info['seconds']:.0f} s); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
