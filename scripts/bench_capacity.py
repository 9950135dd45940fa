"""Capacity against CPU speed: wider, deeper and larger-kernel variants of the default model's architecture.

The default model (``configs/lka-nafnet-w12-denoise-real.yaml``: LKA-NAFNet width 12, encoder [1, 3, 4, 0],
decoder [1, 1, 1, 0], LKA kernel 23, high-passed residual) beside variants that spend the 5 MB weights limit
(about 1.3 M fp32 parameters) differently: width, blocks per level, middle blocks, the LKA kernel. For each:
parameters, fp32 safetensors size, MACs at 256x256, and the CPU time of one fp32 forward of the folded inference
path (as ``load_model`` builds it) at each size, the models timed back to back in rounds (the order reversed every
other round, as ``bench_attention.py`` does) so that load drift hits all alike; the speed column is the median over
rounds of the default's time over the variant's in the same round (1.00 = as fast as today's default; issue 22
asks for at least 0.5 at 1024x1024). Writes ``bench/capacity-cpu.{json,md}``.

    python scripts/bench_capacity.py --threads 2 --sizes 256 1024 --rounds 5 3
    python scripts/bench_capacity.py --variants "w12, noise-gated high-pass" --sizes 1024 --rounds 7

The last variant is the architecture of the second default model's strong network (``residual_highpass_gate``);
``--variants`` times a subset against the default alone. The second default itself (a noise-gated pair) is timed
by ``scripts/bench_default_speed.py``, on photographs that take each of its paths.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from nafrestore.config import load_config
from nafrestore.inference.fold import fold_for_inference
from nafrestore.loading import build_model
from nafrestore.summary import count_macs, count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import command_line, loadavg, machine_info, time_size, write_results  # noqa: E402  (sibling scripts: the same timing)
from bench_fold import like_trained  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "lka-nafnet-w12-denoise-real.yaml"
# name -> overrides of the preset's model section (``key=value`` as `nafrestore train` takes them)
VARIANTS: dict[str, list[str]] = {
    "default (w12)": [],
    "w16": ["model.width=16"],
    "w20": ["model.width=20"],
    "w24": ["model.width=24"],
    "w12 deeper enc [2,4,6,0]": ["model.enc_blocks=[2,4,6,0]"],
    "w12 dec [2,2,2,0] + 2 middle": ["model.dec_blocks=[2,2,2,0]", "model.middle_blocks=2"],
    "w12 LKA 35": ["model.kernel_size=35"],
    "w16 deeper enc [2,4,6,0]": ["model.width=16", "model.enc_blocks=[2,4,6,0]"],
    "w20 LKA 35": ["model.width=20", "model.kernel_size=35"],
    "w12, noise-gated high-pass": ["model.residual_highpass_gate=[8,16]"],
}


def build(overrides: list[str]) -> torch.nn.Module:
    """The preset with ``overrides``, random weights with nonzero residual scales (unfolded, eval; no init_from)."""
    cfg = load_config(PRESET, ["model.init_from=null", *overrides])
    return like_trained(build_model(cfg.model.name, cfg.model.args).eval())


def markdown(info: dict) -> str:
    sizes = info["sizes"]
    head = (
        "| variant | parameters | safetensors MB (fp32) | MACs at 256x256 | "
        + " | ".join(f"CPU ms at {s}x{s} | speed vs default at {s}" for s in sizes)
        + " |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | " + " | ".join("---: | ---:" for _ in sizes) + " |"]
    for r in info["models"]:
        cells = " | ".join(f"{r['median_ms'][str(s)]:.1f} | x{r['speed_vs_default'][str(s)]:.2f}" for s in sizes)
        lines.append(
            f"| {r['variant']} | {r['parameters']:,} | {r['parameters'] * 4 / 1e6:.2f} | "
            f"{r['macs_256'] / 1e9:.3f} G | {cells} |"
        )
    machine = info["machine"]
    rounds = ", ".join(f"{n} at {s} px" for s, n in zip(sizes, info["rounds"], strict=True))
    return "\n".join(
        [
            "# Capacity against CPU speed (the default model's architecture, fp32)",
            "",
            *lines,
            "",
            "CPU ms: median over rounds of one forward of the folded inference path (channels-last), batch 1. "
            "Speed vs default: median over rounds of the default's time over the variant's in the same round "
            f"(x0.50 = half as fast). Rounds: {rounds}, one untimed forward per model and size first.",
            "",
            f"Command: `{info['command']}`",
            "",
            f"Machine: {machine['cpu']}, torch threads: {machine['threads']}, torch {machine['torch']}; load average "
            f"{machine['loadavg_start']} at the start, {machine['loadavg_end']} at the end.",
            *(["", f"Note: {info['note']}"] if info["note"] else []),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024])
    parser.add_argument("--rounds", nargs="+", type=int, default=[5, 3], help="one value for all sizes, or one each")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
        help="which variants to time (the default's row always comes first: the ratios are against it)",
    )  # fmt: skip
    parser.add_argument("--note", default="", help="a line on the conditions, written into the .md")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "capacity-cpu.json", help="JSON; .md beside it")
    args = parser.parse_args()
    rounds = args.rounds * len(args.sizes) if len(args.rounds) == 1 else args.rounds
    if len(rounds) != len(args.sizes):
        parser.error("--rounds takes one value or one per size")
    if args.threads:
        torch.set_num_threads(args.threads)
    loadavg_start = loadavg()

    default = next(iter(VARIANTS))
    models, rows = {}, []
    for name in dict.fromkeys([default, *args.variants]):
        overrides = VARIANTS[name]
        plain = build(overrides)
        models[name] = fold_for_inference(plain)
        rows.append(
            {
                "variant": name,
                "overrides": overrides,
                "parameters": count_parameters(plain),
                "macs_256": count_macs(plain, 256),
            }
        )
    times = {s: time_size(models, s, n, 1) for s, n in zip(args.sizes, rounds, strict=True)}
    for row in rows:
        name = row["variant"]
        row["median_ms"] = {str(s): statistics.median(times[s][name]) * 1e3 for s in args.sizes}
        row["times_s"] = {str(s): times[s][name] for s in args.sizes}
        row["speed_vs_default"] = {
            str(s): statistics.median([d / v for d, v in zip(times[s][default], times[s][name], strict=True)])
            for s in args.sizes
        }

    info = {
        "command": command_line(),
        "preset": str(PRESET.relative_to(ROOT)),
        "precision": "fp32",
        "batch": 1,
        "sizes": args.sizes,
        "rounds": rounds,
        "note": args.note,
        "machine": machine_info(loadavg_start),
        "models": rows,
    }
    write_results(args.out, info, markdown(info))


if __name__ == "__main__":
    main()
