"""Time the folded inference path against the plain model, alternately in one process.

For each preset and input size, runs ``--rounds`` rounds of four variants (unfolded and folded, each contiguous
and channels-last), interleaved so that clock drift, thermal throttling and background load hit all variants
alike. Ratios are medians of per-round ratios of back-to-back runs; "folded path" compares the plain model with
the folded model in the memory format ``load_model`` picks on the device. Weights are random (with nonzero
residual scales): speed does not depend on them. Writes ``bench/fold-<device>.json``.

    python scripts/bench_fold.py                        # CPU, 256 and 512, LKA-NAFNet w12 and NAFNet-SIDD-width32
    python scripts/bench_fold.py --device cuda --precision bf16 --sizes 256 512 1024
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nafrestore.config import load_config
from nafrestore.inference.fold import fold_for_inference
from nafrestore.loading import build_model
from nafrestore.utils.device import autocast, resolve_device, synchronize

ROOT = Path(__file__).resolve().parents[1]


def build(preset: str) -> torch.nn.Module:
    cfg = load_config(ROOT / "configs" / f"{preset}.yaml")
    tlc = cfg.model.tlc_train_size if cfg.model.tlc else None
    return like_trained(build_model(cfg.model.name, cfg.model.args, tlc).eval())


def like_trained(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with nonzero residual scales (beta/gamma) and non-trivial norms, as a trained model has (seed 0)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma", "scale")) or p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """The unfolded model run channels-last (to separate the gain of folding from that of the memory format)."""
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(memory_format=torch.channels_last),))
    return model


def time_once(model: torch.nn.Module, x: torch.Tensor, device: torch.device, precision: str) -> float:
    with torch.inference_mode(), autocast(device, precision):
        synchronize(device)
        start = time.perf_counter()
        model(x)
        synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--presets", nargs="+", default=["lka-nafnet-w12", "nafnet-sidd-width32"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/fold-<device>.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    results = []
    for preset in args.presets:
        plain = build(preset).to(device)
        variants = {
            "unfolded": plain,
            "unfolded_channels_last": _channels_last(plain),
            "folded": fold_for_inference(plain, channels_last=False),
            "folded_channels_last": fold_for_inference(plain, channels_last=True),
        }
        shipped_nhwc = fold_for_inference(plain).channels_last  # what load_model picks on this device
        for size in args.sizes:
            x = torch.rand(args.batch, 3, size, size, device=device)
            with torch.inference_mode():  # correctness and warm-up
                ref = plain(x)
                for name, model in variants.items():
                    for _ in range(2):
                        out = model(x)
                    err = (out - ref).abs().max().item()
                    assert err < 1e-3, f"{name} differs from the unfolded model by {err}"
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.rounds):
                for name, model in variants.items():  # alternate: A, B, C, A, B, C, ...
                    times[name].append(time_once(model, x, device, args.precision))
            med = {name: statistics.median(t) for name, t in times.items()}

            def paired(slow: str, fast: str, times=times) -> float:
                """Median over rounds of the ratio of two variants timed back to back (robust to load drift)."""
                return statistics.median(a / b for a, b in zip(times[slow], times[fast], strict=True))

            row = {
                "preset": preset,
                "size": size,
                "batch": args.batch,
                "shipped_channels_last": shipped_nhwc,
                "median_s": med,
                "min_s": {name: min(t) for name, t in times.items()},
                # The folded path as load_model ships it on this device vs the plain model:
                "speedup_folded_path": paired("unfolded", "folded_channels_last" if shipped_nhwc else "folded"),
                "speedup_fold_only_nchw": paired("unfolded", "folded"),
                "speedup_fold_only_nhwc": paired("unfolded_channels_last", "folded_channels_last"),
                "speedup_channels_last_only": paired("unfolded", "unfolded_channels_last"),
                "times_s": times,
            }
            results.append(row)
            print(
                f"{preset:20s} {size:4d}px  median ms: unfolded {med['unfolded'] * 1e3:6.1f}  "
                f"unfolded+NHWC {med['unfolded_channels_last'] * 1e3:6.1f}  folded {med['folded'] * 1e3:6.1f}  "
                f"folded+NHWC {med['folded_channels_last'] * 1e3:6.1f}  | folded path x{row['speedup_folded_path']:.2f}"
                f" (fold alone x{row['speedup_fold_only_nchw']:.2f} NCHW / x{row['speedup_fold_only_nhwc']:.2f} NHWC,"
                f" NHWC alone x{row['speedup_channels_last_only']:.2f})",
                flush=True,
            )
    name = device.type if device.type != "cuda" else f"cuda-{torch.cuda.get_device_name(device).replace(' ', '_')}"
    out = args.out or ROOT / "bench" / f"fold-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "device": name,
        "precision": args.precision,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "rounds": args.rounds,
        "results": results,
    }
    out.write_text(json.dumps(info, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
