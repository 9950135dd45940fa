"""`make bench`: speed and memory of nafrestore on the current device, for people (no test asserts on it).

Measures, and writes to ``bench/results-<device>.json`` and ``bench/results-<device>.md``:

1. inference: megapixels per second and peak memory for each preset at 256x256, 1024x1024 and 4000x3000 (tiled,
   512 px tiles with 32 px overlap), each in a fresh subprocess so that peak memory is its own (CPU: the process's
   peak RSS, torch, model and image included; CUDA: ``max_memory_allocated``);
2. the folded inference path against the plain model, timed alternately in one process (``bench_fold.py``);
3. training iterations per second at the demo's batch and patch size, contiguous and channels-last, against the
   library's dilated convolution (one process, alternating), and the share of time spent waiting for data;
4. metric throughput: images per second for each metric at 512x512 (LPIPS and rFID with random weights: speed does
   not depend on them).

Weights are random (with nonzero residual scales): speed does not depend on them. On a CPU the large NAFNet presets
skip 4000x3000 by default (minutes each); ``--all`` measures everything.

    python scripts/bench.py [--device cuda] [--precision bf16] [--quick] [--all]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fold  # noqa: E402  (a sibling script: its model builder and timing)

from nafrestore.utils.device import autocast, resolve_device, synchronize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [
    "lka-nafnet-w12",
    "nafnet-sidd-width32",
    "nafnet-gopro-width32",
    "nafnet-sidd-width64",
    "nafnet-gopro-width64",
]
SIZES = [(256, 256), (1024, 1024), (3000, 4000)]  # (H, W); the last is tiled
TILE, OVERLAP = 512, 32


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(device).replace(" ", "_")
    return device.type


# ------------------------------------------------------------------------------------------------------------
# 1. Inference, one configuration per subprocess


def infer_child(preset: str, height: int, width: int, device_spec: str, precision: str, repeats: int) -> dict:
    """Runs in a fresh process: time the folded model on one image, and its peak memory."""
    from nafrestore.inference.fold import fold_for_inference
    from nafrestore.inference.tiling import forward, restore_tiled

    device = resolve_device(device_spec)
    model = fold_for_inference(bench_fold.build(preset).to(device))
    x = torch.rand(3, height, width)
    tiled = height * width > 1024 * 1024

    def run() -> None:
        if tiled:
            restore_tiled(model, x, tile=TILE, overlap=OVERLAP, precision=precision)
        else:
            forward(model, x[None].to(device), precision=precision).cpu()

    with torch.inference_mode():
        run()  # warm-up (and allocator growth)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            run()
            synchronize(device)
            times.append(time.perf_counter() - t0)
    best = min(times)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    )
    return {"preset": preset, "height": height, "width": width, "tiled": tiled, "seconds": best,
            "mp_per_s": height * width / 1e6 / best, "peak_mib": round(peak, 1)}  # fmt: skip


def bench_inference(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    sizes = SIZES[:2] if args.quick else SIZES
    for preset in PRESETS[:2] if args.quick else PRESETS:
        for height, width in sizes:
            big = height * width > 4e6
            if big and device.type == "cpu" and preset != "lka-nafnet-w12" and not args.all:
                rows.append({"preset": preset, "height": height, "width": width, "skipped": "CPU: minutes; --all"})
                continue
            repeats = 1 if big or (device.type == "cpu" and height >= 1024) else 3
            cmd = [sys.executable, __file__, "--child", preset, str(height), str(width), "--device", args.device,
                   "--precision", args.precision, "--repeats", str(repeats)]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                rows.append({"preset": preset, "height": height, "width": width, "error": result.stderr[-300:]})
                print(f"  {preset} {width}x{height}: failed", flush=True)
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"  {preset:22s} {width}x{height}{' tiled' if row['tiled'] else ''}: {row['mp_per_s']:.3f} MP/s, "
                  f"peak {row['peak_mib']:.0f} MiB", flush=True)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------------
# 2. Folded path against the plain model


def bench_folding(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """The inference path in fp32 and in bf16 against the plain fp32 model, all three alternating in one process.

    The plain model (no folding, contiguous, fp32) is the reference a user of the original code would run. bf16 is
    what ``infer --precision auto`` may pick on a CPU with native bf16 (:mod:`nafrestore.inference.precision`);
    where bf16 is emulated (no AVX512-BF16/AMX) it is slow, and the table says which case was measured.
    """
    from nafrestore.inference.fold import fold_for_inference
    from nafrestore.inference.precision import cpu_has_native_bf16
    from nafrestore.metrics.psnr import psnr

    rows = []
    for preset in ["lka-nafnet-w12", "nafnet-sidd-width32"]:
        plain = bench_fold.build(preset).to(device)
        folded = fold_for_inference(plain)
        x = torch.rand(1, 3, 256, 256, device=device)
        runs = {"plain": (plain, "fp32"), "fp32": (folded, "fp32"), "bf16": (folded, "bf16")}
        outputs = {}
        for name, (model, precision) in runs.items():  # warm-up, and the outputs compared below
            with torch.inference_mode(), autocast(device, precision):
                outputs[name] = model(x).float().clamp(0, 1)
        native = device.type != "cpu" or cpu_has_native_bf16()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(3 if args.quick else 10):
            for name, (model, precision) in runs.items():  # alternate in one process
                if name == "bf16" and not native and i > 0:
                    continue  # emulated bf16 (x0.06-0.1 here): one round shows it, nine more only add minutes
                times[name].append(bench_fold.time_once(model, x, device, precision))

        def ratio(name: str, times: dict = times) -> float:  # per round, over the rounds both were timed
            return statistics.median(a / b for a, b in zip(times["plain"], times[name], strict=False))

        rows.append({"preset": preset, "size": 256, "speedup": ratio("fp32"), "speedup_bf16": ratio("bf16"),
                     "bf16_psnr_vs_fp32": psnr(outputs["bf16"], outputs["fp32"], quantize=False).item(),
                     "native_bf16": native,
                     "channels_last": folded.channels_last,
                     "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()}})  # fmt: skip
        r = rows[-1]
        print(f"  {preset:22s} 256x256: inference path fp32 x{r['speedup']:.2f}, bf16 x{r['speedup_bf16']:.2f} "
              f"({r['bf16_psnr_vs_fp32']:.1f} dB from fp32) the plain fp32 model", flush=True)  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------------------------
# 3. Training speed at the demo's batch and patch size


def bench_training(args: argparse.Namespace, device: torch.device) -> dict:
    """Training steps of the demo recipe in three variants, alternated in one process (best block of each): the
    phase-grid dilated convolution (:class:`DilatedDepthwiseConv2d`) contiguous and channels-last, and the library's
    dilated convolution (contiguous), the reference for the ratios."""
    from nafrestore.config import load_config
    from nafrestore.data import build_datasets, build_train_loader
    from nafrestore.engine import build_loss, build_optimizer, train_step
    from nafrestore.loading import build_model
    from nafrestore.models.layers import DilatedDepthwiseConv2d
    from nafrestore.utils.device import MEMORY_FORMATS, resolve_precision

    cfg = load_config(ROOT / "configs" / "lka-nafnet-w12-denoise-sample.yaml")
    train_set, _ = build_datasets(cfg.data, seed=0)
    loader = build_train_loader(train_set, batch_size=cfg.train.batch_size, num_workers=cfg.data.num_workers, seed=0)
    model = build_model(cfg.model.name, cfg.model.args).to(device).train()
    optimizer = build_optimizer(model, lr=cfg.train.lr, betas=cfg.train.betas, weight_decay=cfg.train.weight_decay)
    loss_fn = build_loss([(t.name, t.weight) for t in cfg.train.loss])
    precision = resolve_precision(args.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    variants = {"library dilated conv": ("contiguous", True), "contiguous": ("contiguous", False),
                "channels_last": ("channels_last", False)}  # fmt: skip
    steps, rounds = (4, 1) if args.quick else (15, 2)
    best = dict.fromkeys(variants, float("inf"))
    wait = compute = 0.0
    batches = iter(loader)
    for _ in range(rounds):
        for name, (fmt, library_conv) in variants.items():
            model.to(memory_format=MEMORY_FORMATS[fmt])
            for m in model.modules():
                if isinstance(m, DilatedDepthwiseConv2d):
                    m.plain = library_conv
            block = 0.0
            for i in range(steps + 2):  # 2 warm-up steps per block (oneDNN primitives for the new layout)
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                train_step(model, batch, loss_fn, optimizer, scaler, precision=precision, device=device,
                           memory_format=fmt)  # fmt: skip
                synchronize(device)
                t2 = time.perf_counter()
                if i >= 2:
                    block += t2 - t0
                    if name == "contiguous":
                        wait, compute = wait + t1 - t0, compute + t2 - t1
            best[name] = min(best[name], block / steps)
    it_s = {name: 1 / seconds for name, seconds in best.items()}
    reference = it_s["library dilated conv"]
    row = {"batch": cfg.train.batch_size, "patch": cfg.data.patch_size, "workers": cfg.data.num_workers,
           "it_per_s": it_s["contiguous"], "it_per_s_by_variant": it_s,
           "ratio_to_library_conv": {name: v / reference for name, v in it_s.items()},
           "data_wait_share": wait / (wait + compute), "precision": precision}  # fmt: skip
    for name, v in it_s.items():
        print(f"  {name:22s} {v:.2f} it/s (x{v / reference:.2f}) at batch {row['batch']} x {row['patch']} px",
              flush=True)  # fmt: skip
    print(f"  {100 * row['data_wait_share']:.1f} % of the time waiting for data", flush=True)
    return row


# ------------------------------------------------------------------------------------------------------------
# 4. Metric throughput


def bench_metrics(args: argparse.Namespace, device: torch.device) -> list[dict]:
    import torchvision

    from nafrestore.metrics import MetricSuite
    from nafrestore.metrics.fid import build_fid_inception

    rows = []
    with tempfile.TemporaryDirectory() as weights:
        # Random weights under the official names: the networks' speed does not depend on their values.
        torch.save(torchvision.models.alexnet().state_dict(), Path(weights) / "alexnet-owt-7be5be79.pth")
        torch.save(build_fid_inception().state_dict(), Path(weights) / "pt_inception-2015-12-05-6726825d.pth")
        n = 4 if args.quick else 16
        gt = torch.rand(n, 3, 512, 512)
        pred = (gt + 0.05 * torch.randn_like(gt)).clamp(0, 1)
        for name in ["psnr", "ssim", "ms-ssim", "lpips", "rfid"]:
            suite = MetricSuite(name, weights_dir=weights, allow_unverified_weights=True, device=device)
            suite.update(pred[:2], gt[:2])  # warm-up
            suite.reset()
            t0 = time.perf_counter()
            for i in range(0, n, 4):
                suite.update(pred[i : i + 4], gt[i : i + 4])
            if name == "rfid":
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # fewer samples than 2048: fine for timing
                    suite.compute()
            synchronize(device)
            seconds = time.perf_counter() - t0
            rows.append({"metric": name, "size": 512, "images_per_s": n / seconds})
            print(f"  {name:8s} {n / seconds:8.2f} images/s at 512x512", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------------------


def markdown(info: dict) -> str:
    lines = [f"# nafrestore benchmark: {info['device']}", "",
             f"torch {info['torch']}, {info['threads']} threads, precision {info['precision']}, {info['date']}.", "",
             "## Inference (folded path)", "",
             "Peak memory: the whole process's peak RSS on a CPU (torch and the model included), "
             "`max_memory_allocated` on CUDA.", "",
             "| preset | size | MP/s | peak memory (MiB) |", "| --- | --- | ---: | ---: |"]  # fmt: skip
    for r in info["inference"]:
        size = f"{r['width']}x{r['height']}" + (" (tiled)" if r.get("tiled") else "")
        if "mp_per_s" in r:
            lines.append(f"| {r['preset']} | {size} | {r['mp_per_s']:.3f} | {r['peak_mib']:.0f} |")
        else:
            lines.append(f"| {r['preset']} | {size} | {r.get('skipped') or 'failed'} | |")
    native = all(r.get("native_bf16") for r in info["folding"])
    lines += ["", "## Inference path vs the plain fp32 model (256x256, alternating in one process)", "",
              f"bf16 is {'native' if native else 'emulated (no AVX512-BF16/AMX: `--precision auto` stays fp32 here)'}"
              " on this device.", "",
              "| preset | fp32 path | bf16 path | bf16 PSNR from fp32 |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
    lines += [f"| {r['preset']} | x{r['speedup']:.2f} | x{r['speedup_bf16']:.2f} | {r['bf16_psnr_vs_fp32']:.1f} dB |"
              for r in info["folding"]]  # fmt: skip
    t = info["training"]
    lines += ["", "## Training (demo recipe, variants alternated in one process)", "",
              f"Batch {t['batch']} x {t['patch']} px, {t['workers']} loader workers; "
              f"{100 * t['data_wait_share']:.1f} % of the time waiting for data.", "",
              "| variant | it/s | ratio |", "| --- | ---: | ---: |"]  # fmt: skip
    lines += [f"| {name} | {v:.2f} | x{t['ratio_to_library_conv'][name]:.2f} |"
              for name, v in t["it_per_s_by_variant"].items()]  # fmt: skip
    lines += ["", "## Metrics at 512x512", "", "| metric | images/s |", "| --- | ---: |"]
    lines += [f"| {r['metric']} | {r['images_per_s']:.2f} |" for r in info["metrics"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--quick", action="store_true", help="fewer presets, sizes and repeats")
    parser.add_argument("--all", action="store_true", help="also the large presets at 4000x3000 on a CPU")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench")
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "H", "W"), help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, h, w = args.child
        print(json.dumps(infer_child(preset, int(h), int(w), args.device, args.precision, args.repeats)))
        return
    device = resolve_device(args.device)
    info = {"device": device_name(device), "precision": args.precision, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    print("[1/4] inference", flush=True)
    info["inference"] = bench_inference(args, device)
    print("[2/4] folded path vs plain model", flush=True)
    info["folding"] = bench_folding(args, device)
    print("[3/4] training", flush=True)
    info["training"] = bench_training(args, device)
    print("[4/4] metrics", flush=True)
    info["metrics"] = bench_metrics(args, device)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"results-{device_name(device)}"
    stem.with_suffix(".json").write_text(json.dumps(info, indent=2))
    stem.with_suffix(".md").write_text(markdown(info))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
