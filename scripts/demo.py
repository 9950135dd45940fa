"""The main job, offline, end to end: what `make demo` runs.

1. Train LKA-NAFNet (width 12) on the photographs shipped with scikit-image, Gaussian noise sigma 25, for a
   wall-clock budget (configs/lka-nafnet-w12-denoise-sample.yaml).
2. Evaluate the best checkpoint on the held-out photographs (PSNR, SSIM, MS-SSIM; LPIPS and rFID too when their
   weight files are present) against the noisy input and OpenCV's non-local means at a strength tuned on the
   training photographs, and write the HTML report of both (runs/demo/report/report.html).
3. Restore a folder of noisy photographs with `nafrestore infer`.
4. Restore the same folder with the default model that ships (noise-blind, for real photographs).
5. Print a table and write runs/demo/summary.json.

Usage: python scripts/demo.py [--minutes 6] [--run-dir runs/demo] [extra config overrides ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from nafrestore import evaluation as ev
from nafrestore.config import load_config
from nafrestore.data import build_val_dataset, save_image
from nafrestore.data.datasets import SyntheticDataset
from nafrestore.data.sample import sample_images
from nafrestore.engine import train
from nafrestore.inference import load_model
from nafrestore.metrics import MetricSuite, weights_status
from nafrestore.models.pretrained import DEFAULT, find_pretrained
from nafrestore.report import ReportImages, write_eval_report

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lka-nafnet-w12-denoise-sample.yaml"
NLM_STRENGTHS = (9, 12, 15, 18, 21)  # h of fastNlMeansDenoisingColored, on the 0-255 scale


def nlm(noisy: torch.Tensor, h: float) -> torch.Tensor:
    """OpenCV non-local means on a (3, H, W) [0, 1] image: the classical baseline."""
    bgr = np.ascontiguousarray((noisy.permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8))
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)
    return torch.from_numpy(out[..., ::-1].astype(np.float32) / 255).permute(2, 0, 1)


def tune_nlm(degradations: list[dict], seed: int) -> float:
    """The NLM strength with the best mean PSNR on 256 px crops of the training photographs (not the test set)."""
    images = sample_images("train")[:4]
    crops = [img[:256, :256] for _, img in images]
    data = SyntheticDataset(crops, degradations, names=[n for n, _ in images], seed=seed)
    best_h, best = NLM_STRENGTHS[0], -1.0
    for h in NLM_STRENGTHS:
        suite = MetricSuite("psnr")
        for i in range(len(data)):
            item = data[i]
            suite.update(nlm(item["lq"], h)[None], item["gt"][None])
        score = suite.compute()["psnr"]
        if score > best:
            best_h, best = h, score
    return best_h


def available_metrics() -> tuple[str, str | None]:
    """psnr,ssim,ms-ssim plus lpips / rfid when their weight files are present and verified, and a note if not."""
    status = {row["name"]: row["status"] for row in weights_status()}
    names, missing = ["psnr", "ssim", "ms-ssim"], []
    for metric, file in (("lpips", "alexnet-owt-7be5be79.pth"), ("rfid", "pt_inception-2015-12-05-6726825d.pth")):
        if status.get(file) == "verified":
            names.append(metric)
        else:
            missing.append(file)
    note = None
    if missing:
        note = (
            f"LPIPS/rFID skipped (the demo downloads nothing): put {' and '.join(missing)} in "
            f"$TORCH_HOME/hub/checkpoints or $NAFRESTORE_WEIGHTS_DIR to enable them, or fetch them with "
            f"`nafrestore models --download {' --download '.join(missing)}` (`nafrestore models` lists them)."
        )
    return ",".join(names), note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default: the config's)")
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. train.lr=2e-3")
    args = parser.parse_args()
    overrides = [f"run.dir={args.run_dir}", *args.overrides]
    if args.minutes is not None:
        overrides.append(f"train.time_budget_min={args.minutes}")
    cfg = load_config(CONFIG, overrides)
    run_dir = Path(cfg.run_dir)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print(f"[1/5] training {cfg.model.name} for {cfg.train.time_budget_min} min on the sample photographs", flush=True)
    t0 = time.monotonic()
    train(cfg, quiet=True, overwrite=True)  # `make demo` is meant to be run again: it replaces its own run
    train_seconds = time.monotonic() - t0
    ckpt = run_dir / "checkpoints" / "best.pt"

    print("[2/5] evaluating on the held-out photographs", flush=True)
    metrics, note = available_metrics()
    val = build_val_dataset(cfg.data, seed=cfg.run.seed)
    model = load_model(ckpt, device="cpu")
    suite, input_suite = (MetricSuite(metrics, allow_fewer_scales=True) for _ in range(2))
    images = ReportImages(run_dir / "report")  # the report's images, written as they are scored
    result = ev.score(
        ev.dataset_items(val), suite, restore=ev.model_restore(model), input_suite=input_suite, report_images=images
    )  # fmt: skip
    result.origin = {"run_dir": str(run_dir), "checkpoint": str(ckpt), "data": "the held-out sample photographs"}
    ev.write_json(result, run_dir / "eval.json")

    print("[3/5] non-local means baseline (strength tuned on the training photographs)", flush=True)
    h = tune_nlm(cfg.data.degradations, cfg.run.seed)
    nlm_items = [ev.EvalItem(it.name, it.gt, pred=nlm(it.lq, h)) for it in ev.dataset_items(val)]
    nlm_result = ev.score(nlm_items, suite, report_images=images.for_view("nlm"))
    both = ev.Comparison({"LKA-NAFNet (ours)": result, f"non-local means h={h}": nlm_result})
    report = write_eval_report(both, run_dir / "report", title="make demo: denoising the held-out photographs")

    print("[4/5] restoring a folder of noisy photographs with `nafrestore infer`", flush=True)
    noisy_dir, restored_dir = run_dir / "noisy", run_dir / "restored"
    for i in range(len(val)):
        item = val[i]
        save_image(noisy_dir / f"{item['name']}.png", item["lq"])
    cmd = [sys.executable, "-m", "nafrestore", "infer", str(noisy_dir), "-o", str(restored_dir), "--ckpt", str(ckpt),
           "--overwrite"]  # fmt: skip
    print("      $ nafrestore " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True)

    print("[5/5] the same folder with the model that ships (noise-blind, made for real photographs)", flush=True)
    default_dir = run_dir / "restored-default"
    cmd = [sys.executable, "-m", "nafrestore", "infer", str(noisy_dir), "-o", str(default_dir), "--overwrite"]
    if find_pretrained(DEFAULT).path.is_file():
        print("      $ nafrestore " + " ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True)
    else:
        print(f"      skipped: {find_pretrained(DEFAULT).path} is not installed", flush=True)

    summary = {
        "model": result.summary,
        "input": result.input_summary,
        "nlm": {**nlm_result.summary, "h": h},
        "checkpoint": str(ckpt),
        "train_seconds": round(train_seconds, 1),
        "n_images": result.n_images,
        "metrics_note": note,
    }
    (run_dir / "summary.json").write_text(json.dumps(ev.json_safe(summary), indent=2))
    names = list(result.summary)
    print("\n" + " " * 22 + "".join(f"{n:>10}" for n in names))
    for label, row in (("LKA-NAFNet (ours)", result.summary), ("noisy input", result.input_summary),
                       (f"non-local means h={h}", nlm_result.summary)):  # fmt: skip
        print(f"{label:<22}" + "".join(f"{row[n]:>10.4f}" for n in names))
    if note:
        print(note)
    print(f"\ntrained {train_seconds / 60:.1f} min; {result.n_images} held-out photographs, Gaussian sigma 25")
    print(f"run directory:     {run_dir}/ (config.yaml, metrics.jsonl, train.log, checkpoints/)")
    print(f"training curves:   {run_dir / 'curves.png'}")
    print(f"report:            {report} (open it in a browser; comparison.png beside it)")
    print(f"restored folder:   {restored_dir}/ (and {default_dir}/ with the default model)")
    print(f"summary:           {run_dir / 'summary.json'}")
    if result.summary["psnr"] <= nlm_result.summary["psnr"]:
        print("warning: the model did not beat non-local means on PSNR; train longer (--minutes).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
