"""Training-data throughput: 256 px patches per second per loader worker from the raw SIDD layout (full-size
frames decoded for every patch) and from prepared shards, plus the throughput of `nafrestore prepare` itself.

One loader worker is measured as it runs: one process, one thread (OpenCV's thread pool off, as in the loader's
workers), calling the training dataset directly, with random crops and flips/rotations on. The frames are
fabricated in the SIDD-Medium layout at full size (5328x3000: gradients plus noise) unless --sidd names a real
SIDD-Medium folder. Writes bench/data-cpu.json and bench/data-cpu.md.

    python scripts/bench_data.py                          # 3 fabricated frame pairs, prepare with 2 workers
    python scripts/bench_data.py --sidd /data/SIDD --frames 10 --workers 8
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIDD_SIZE = (3000, 5328)  # height, width of most SIDD-Medium frames


def fabricate_sidd(root: Path, frames: int) -> None:
    """``frames`` full-size pairs in SIDD-Medium's layout: a colour gradient as the ground truth, plus noise."""
    import cv2

    height, width = SIDD_SIZE
    ramp_y = np.linspace(0, 200, height, dtype=np.float32)[:, None]
    ramp_x = np.linspace(0, 200, width, dtype=np.float32)[None, :]
    gt = np.stack(np.broadcast_arrays(ramp_x, ramp_y, (ramp_x + ramp_y) / 2), axis=-1).astype(np.uint8)
    for i in range(frames):
        scene = root / "Data" / f"{i + 1:04d}_001_S6_00100_00060_3200_L"
        scene.mkdir(parents=True)
        noisy = gt + np.random.default_rng(i).integers(0, 48, size=gt.shape, dtype=np.uint8)
        cv2.imwrite(str(scene / "GT_SRGB_010.PNG"), gt)
        cv2.imwrite(str(scene / "NOISY_SRGB_010.PNG"), noisy)


def time_patches(patches, count: int) -> tuple[int, float]:
    """(patches taken, seconds) for ``count`` patches of an iterator, after one unmeasured warm-up patch."""
    next(patches)
    start = time.perf_counter()
    for _ in range(count):
        item = next(patches)
        assert item["lq"].shape[-2:] == (256, 256)
    return count, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidd", type=Path, help="A SIDD-Medium sRGB folder (default: fabricated frames).")
    parser.add_argument("--frames", type=int, default=3, help="Frame pairs used (fabricated, or the first of --sidd).")
    parser.add_argument("--raw-patches", type=int, default=8, help="Patches timed from the raw layout.")
    parser.add_argument("--shard-patches", type=int, default=600, help="Patches timed from the shards.")
    parser.add_argument("--workers", type=int, default=2, help="Processes for `prepare`.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "data-cpu", help="Output path without suffix.")
    parser.add_argument("--note", default="", help="What else ran on the machine, for the record.")
    args = parser.parse_args()

    import cv2
    import torch

    from nafrestore.data import PairedImageDataset, ShardTrainDataset, prepare_shards, sidd_train_pairs

    cv2.setNumThreads(0)  # as in a loader worker (nafrestore.data.loaders._seed_worker)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        source = args.sidd
        if source is None:
            source = work / "SIDD"
            t0 = time.perf_counter()
            fabricate_sidd(source, args.frames)
            print(f"fabricated {args.frames} frame pairs of {SIDD_SIZE[1]}x{SIDD_SIZE[0]} in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
        pairs = sidd_train_pairs(source)[: args.frames]
        subset = work / "subset"  # the chosen frames alone, for prepare
        for name, lq, gt in pairs:
            (subset / "Data" / name.split("/")[0]).mkdir(parents=True, exist_ok=True)
            for path in (lq, gt):
                (subset / "Data" / name.split("/")[0] / path.name).symlink_to(path.resolve())

        # (a) the raw layout: every patch decodes a whole frame pair
        raw = PairedImageDataset(pairs, patch_size=256, flip=True, rot90=True, cache="never", min_epoch_length=1)
        raw_items = (raw[(i % len(pairs), i)] for i in range(10**9))
        n_raw, s_raw = time_patches(raw_items, args.raw_patches)
        print(f"raw sidd: {n_raw / s_raw:.2f} patches/s", flush=True)

        # (b) preparing the shards
        dst = work / "shards"
        t0 = time.perf_counter()
        report = prepare_shards("sidd", subset, dst, shard_size=64, workers=args.workers, progress=False)
        s_prep = time.perf_counter() - t0
        n_prep = report.samples["train"]
        size = sum(p.stat().st_size for p in dst.glob("train-*.tar"))
        megapixels = sum(np.prod(raw.item_size(i)) for i in range(len(pairs))) / 1e6
        print(f"prepare: {n_prep} samples in {s_prep:.1f} s with {args.workers} workers", flush=True)

        # (c) the shards: the stream one loader worker reads (rank 0 of 1, no DataLoader workers, batch 1)
        shards = ShardTrainDataset(dst, patch_size=256, flip=True, rot90=True, shuffle_buffer=256)
        stream = shards.split(rank=0, world_size=1, num_workers=0, batch_size=1, seed=0)

        def endless():
            for epoch in range(10**9):
                stream.set_epoch(epoch)
                yield from stream

        n_sh, s_sh = time_patches(endless(), args.shard_patches)
        print(f"shards: {n_sh / s_sh:.1f} patches/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "command": "python " + " ".join(["scripts/bench_data.py", *_without_note(sys.argv[1:])]),
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "opencv": cv2.__version__, "note": args.note},
        "frames": {"count": len(pairs), "source": "fabricated" if args.sidd is None else str(args.sidd),
                   "megapixels": round(float(megapixels), 1)},
        "patch": 256, "augmentations": "random crop, flips and 90-degree rotations",
        "raw_sidd": {"patches": n_raw, "seconds": round(s_raw, 2), "patches_per_s_per_worker": n_raw / s_raw},
        "shards": {"patches": n_sh, "seconds": round(s_sh, 2), "patches_per_s_per_worker": n_sh / s_sh,
                   "shuffle_buffer": 256},
        "prepare": {"samples": n_prep, "shards": report.shards["train"], "crop_size": 512, "step": 384,
                    "workers": args.workers, "seconds": round(s_prep, 2), "samples_per_s": n_prep / s_prep,
                    "samples_per_s_per_worker": n_prep / s_prep / args.workers,
                    "source_megapixels_per_s": float(megapixels) / s_prep, "shard_bytes": size},
        "speedup_per_worker": (n_sh / s_sh) / (n_raw / s_raw),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


def _without_note(argv: list[str]) -> list[str]:
    """The command line without ``--note TEXT`` (a remark, not a setting)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg == "--note" or arg.startswith("--note="):
            skip = arg == "--note"
            continue
        out.append(arg)
    return out


def markdown(r: dict) -> str:
    p = r["prepare"]
    return f"""# Training data throughput: raw SIDD frames vs prepared shards

Command: `{r["command"]}` ({r["date"]}; {r["machine"]["cpus"]} CPUs; torch {r["machine"]["torch"]}, OpenCV {r["machine"]["opencv"]}).
{r["machine"]["note"]}

{r["frames"]["count"]} SIDD frame pairs of 5328x3000 ({r["frames"]["source"]}). One loader worker: one process, one thread, 256 px
patches with {r["augmentations"]}.

| source | patches/s per worker | measured |
| --- | ---: | --- |
| raw `sidd` layout (a 16-megapixel PNG pair decoded per patch) | {r["raw_sidd"]["patches_per_s_per_worker"]:.2f} | {r["raw_sidd"]["patches"]} patches in {r["raw_sidd"]["seconds"]} s |
| `shards` (512 px sub-images, shuffle buffer {r["shards"]["shuffle_buffer"]}) | {r["shards"]["patches_per_s_per_worker"]:.1f} | {r["shards"]["patches"]} patches in {r["shards"]["seconds"]} s |
| **speed-up** | **x{r["speedup_per_worker"]:.0f}** | |

`nafrestore prepare sidd` ({p["crop_size"]} px crops, {p["step"]} px step, {p["workers"]} worker processes): {p["samples"]} sub-image pairs in
{p["shards"]} shards ({p["shard_bytes"] / 2**20:.0f} MiB) in {p["seconds"]} s: {p["samples_per_s"]:.1f} samples/s ({p["samples_per_s_per_worker"]:.1f} per worker),
{p["source_megapixels_per_s"]:.1f} source megapixels/s.
"""  # noqa: E501


if __name__ == "__main__":
    sys.exit(main())
