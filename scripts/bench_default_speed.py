"""The default model's CPU speed against the first default's, on photographs that take each of its paths.

    python scripts/bench_default_speed.py --threads 2 --rounds 7 --out bench/speed-default-v4.json

The default since v2 is a noise-gated pair (``nafrestore/models/gated.py``): a photograph whose estimated noise level
is below the gate runs the mild network (the first default's), one above it the strong network, one inside the
gate both. So it is timed on the validation photograph ``astronaut`` resized to SIZE x SIZE three ways: clean
(the mild path), with Gaussian noise of sigma 10 (level inside the gate [8, 16]: both networks) and with strong
camera noise (``bench_real_pairs.STRONG_NOISE``, shot 0.05: the strong path). Each input's level is printed. The
two models (folded, fp32, as ``nafrestore.load_model`` gives them; batch 1) are timed alternately in rounds, the
order reversed every other round; the figure is the median over rounds of the first default's time over the
second's in the same round (x0.50 = half as fast; issue 22 asks for at least that at 1024x1024).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import nafrestore
from nafrestore.data.sample import sample_images
from nafrestore.models.layers import noise_level
from nafrestore.models.pretrained import find_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import command_line, loadavg, machine_info, time_size, write_results  # noqa: E402  (siblings)
from bench_real_pairs import STRONG_NOISE, degraded, to_uint8  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def inputs(size: int) -> dict[str, torch.Tensor]:
    """The three (1, 3, size, size) inputs in [0, 1], by name."""
    name, photo = next((n, img) for n, img in sample_images("val") if n == "astronaut")
    clean = cv2.resize(photo, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    mid, strong = [{"type": "gaussian_noise", "sigma": 10}], STRONG_NOISE["strong noise (shot 0.05)"]
    noisy = [
        ("clean: mild network", to_uint8(clean)),
        ("Gaussian sigma 10: both networks", degraded([(name, clean)], mid, 0)[0][1]),
        ("strong camera noise: strong network", degraded([(name, clean)], strong, 0)[0][1]),
    ]
    return {label: torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None] for label, img in noisy}


def registry_name(source: str) -> str:
    """``source``, with a registry alias resolved (``default`` -> ``default`` = its model's name)."""
    entry = find_pretrained(source)
    return source if entry is None or entry.name == source else f"{source} = {entry.name}"


def markdown(info: dict) -> str:
    lines = [
        f"# CPU speed: `{info['second']}` against `{info['first']}`",
        "",
        f"{info['size']}x{info['size']}, fp32, batch 1, folded (`nafrestore.load_model`), {info['rounds']} rounds "
        f"per input, the two models alternately; speed = median over rounds of `{info['first']}`'s time over "
        f"`{info['second']}`'s in the same round (x0.50 = half as fast).",
        "",
        f"| input | noise level (0-255) | {info['first']} ms | {info['second']} ms | speed |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in info["inputs"]:
        lines.append(
            f"| {r['input']} | {r['noise_level']:.1f} | {r['first_ms']:.0f} | {r['second_ms']:.0f} | "
            f"x{r['speed']:.2f} |"
        )
    machine = info["machine"]
    lines += [
        "",
        f"Command: `{info['command']}`",
        "",
        f"Machine: {machine['cpu']}, torch threads: {machine['threads']}, torch {machine['torch']}; load average "
        f"{machine['loadavg_start']} at the start, {machine['loadavg_end']} at the end.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--first", default="lka-nafnet-w12-denoise-real", help="the model to compare against")
    parser.add_argument("--second", default="default", help="the model timed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "speed-default-v4.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = loadavg()
    models = {"first": nafrestore.load_model(args.first), "second": nafrestore.load_model(args.second)}
    rows = []
    for label, x in inputs(args.size).items():
        level = float(noise_level(x)[0]) * 255
        print(f"{label}: noise level {level:.1f}", file=sys.stderr)
        times = time_size(models, args.size, args.rounds, 1, x)
        rows.append({
            "input": label,
            "noise_level": level,
            "first_ms": statistics.median(times["first"]) * 1e3,
            "second_ms": statistics.median(times["second"]) * 1e3,
            "speed": statistics.median([a / b for a, b in zip(times["first"], times["second"], strict=True)]),
            "times_s": times,
        })  # fmt: skip
    info = {
        "command": command_line(),
        "first": registry_name(args.first),
        "second": registry_name(args.second),
        "size": args.size,
        "rounds": args.rounds,
        "machine": machine_info(start),
        "inputs": rows,
    }
    write_results(args.out, info, markdown(info))


if __name__ == "__main__":
    main()
