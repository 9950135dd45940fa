"""LKA vs LSKA at equal receptive field: parameters, MACs and CPU time in the LKA-NAFNet w12 layout.

For ``attention`` lka and lska at ``kernel_size`` 23, 35 and 53 (``configs/lka-nafnet-w12.yaml`` with those two
keys overridden; both attentions decompose k the same way, see ``LARGE_KERNELS``): parameters, MACs at 256x256
(``summary.count_macs``) and the time of one fp32 forward of the folded inference path, as ``load_model`` builds it
on the CPU (``fold_for_inference``: affines folded, channels-last). Per input size, each round times the six models
once each, back to back (the order reversed every other round), so that load drift hits all of them alike; the
figures are the median per model and, per k, the median over rounds of the LSKA / LKA ratio of the same round.
Weights are random with nonzero residual scales (as ``bench_fold.build``): speed does not depend on them. Writes
``bench/attention-cpu.json`` and ``bench/attention-cpu.md``.

    OMP_NUM_THREADS=2 python scripts/bench_attention.py --threads 2 --sizes 256 1024 --rounds 10 3
    python scripts/bench_attention.py --sizes 256 --rounds 5 --kernel-sizes 23 35    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nafrestore.config import load_config
from nafrestore.inference.fold import fold_for_inference
from nafrestore.loading import build_model
from nafrestore.summary import count_macs, count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fold import like_trained  # noqa: E402  (a sibling script: the same random weights as its timings)

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "lka-nafnet-w12.yaml"
ATTENTIONS = ("lka", "lska")


def build(attention: str, kernel_size: int) -> torch.nn.Module:
    """The w12 preset with the given attention, random weights and nonzero residual scales (unfolded, eval)."""
    cfg = load_config(PRESET, [f"model.attention={attention}", f"model.kernel_size={kernel_size}"])
    return like_trained(build_model(cfg.model.name, cfg.model.args).eval())


def time_once(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
    return time.perf_counter() - start


def time_size(
    models: dict[Any, torch.nn.Module], size: int, rounds: int, warmup: int, x: torch.Tensor | None = None
) -> dict[Any, list]:
    """Seconds per forward on a (1, 3, size, size) input (``x``, else uniform noise), ``rounds`` per model after
    ``warmup`` untimed, interleaved (the order reversed every other round)."""
    if x is None:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    for _ in range(warmup):  # oneDNN primitive creation, allocator
        for model in models.values():
            time_once(model, x)
    times: dict[tuple[str, int], list] = {key: [] for key in models}
    order = list(models)
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            times[key].append(time_once(models[key], x))
        print(f"  {size} px round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return times


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (Linux), to tell whether the machine had other work."""
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    """The command that ran this script, for a benchmark's record (with ``OMP_NUM_THREADS`` when it was set)."""
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"OMP_NUM_THREADS={omp} " if omp else "") + "python " + shlex.join(sys.argv)


def machine_info(loadavg_start: str) -> dict:
    """The machine and its load, for a benchmark's JSON (``loadavg_start``: :func:`loadavg` before timing)."""
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
    }


def write_results(out: Path, info: dict, md: str) -> None:
    """``out`` (JSON) and the markdown beside it (``.md``); prints the markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def markdown(info: dict) -> str:
    """The results as a markdown table (one row per model, a LSKA / LKA row per k) with the command and machine."""
    sizes = info["sizes"]
    head = "| k | attention | parameters | MACs at 256x256 | " + " | ".join(f"CPU ms at {s}x{s}" for s in sizes) + " |"
    lines = [head, "| ---: | --- | ---: | ---: | " + " | ".join("---:" for _ in sizes) + " |"]
    rows = {(r["attention"], r["kernel_size"]): r for r in info["models"]}
    for k in info["kernel_sizes"]:
        for attention in ATTENTIONS:
            r = rows[(attention, k)]
            ms = " | ".join(f"{r['median_ms'][str(s)]:.1f}" for s in sizes)
            lines.append(f"| {k} | {attention.upper()} | {r['parameters']:,} | {r['macs_256'] / 1e9:.3f} G | {ms} |")
        ratio = info["lska_over_lka"][str(k)]
        spread = {s: (min(r), max(r)) for s, r in ratio["time_per_round"].items()}
        times = " | ".join(
            f"x{ratio['time'][str(s)]:.2f} ({spread[str(s)][0]:.2f}-{spread[str(s)][1]:.2f})" for s in sizes
        )
        lines.append(f"| {k} | LSKA / LKA | x{ratio['parameters']:.3f} | x{ratio['macs_256']:.3f} | {times} |")
    rounds = ", ".join(
        f"{n} at {s} px ({w} untimed first)" for s, n, w in zip(sizes, info["rounds"], info["warmup"], strict=True)
    )
    machine = info["machine"]
    return "\n".join(
        [
            "# LKA vs LSKA at equal receptive field (LKA-NAFNet w12, CPU, fp32)",
            "",
            *lines,
            "",
            "CPU ms: median over rounds of one forward of the folded inference path (channels-last), batch 1. "
            "LSKA / LKA time: median over rounds of the ratio of the two models timed in the same round "
            "(in brackets: the lowest and highest of those per-round ratios). "
            f"Rounds: {rounds}.",
            "",
            f"Command: `{info['command']}`",
            "",
            f"Machine: {machine['cpu']}, torch threads: {machine['threads']}, torch {machine['torch']}, "
            f"{machine['platform']}; load average {machine['loadavg_start']} at the start, "
            f"{machine['loadavg_end']} at the end.",
            *(["", f"Note: {info['note']}"] if info["note"] else []),
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 1024], help="square input sides to time")
    parser.add_argument(
        "--rounds", nargs="+", type=int, default=[10, 3], help="rounds per size: one value for all, or one per size"
    )
    parser.add_argument(
        "--warmup",
        nargs="+",
        type=int,
        default=[1],
        help="untimed forwards per model and size (one value or one per size)",
    )
    parser.add_argument("--kernel-sizes", nargs="+", type=int, default=[23, 35, 53])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--note", default="", help="a line on the conditions, written into the .md")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "attention-cpu.json", help="JSON; .md beside it")
    args = parser.parse_args()
    rounds = args.rounds * len(args.sizes) if len(args.rounds) == 1 else args.rounds
    warmup = args.warmup * len(args.sizes) if len(args.warmup) == 1 else args.warmup
    if len(rounds) != len(args.sizes) or len(warmup) != len(args.sizes):
        parser.error("--rounds and --warmup take one value or one per size")
    if args.threads:
        torch.set_num_threads(args.threads)
    loadavg_start = loadavg()

    models, rows = {}, []
    for k in args.kernel_sizes:
        for attention in ATTENTIONS:
            plain = build(attention, k)
            models[(attention, k)] = fold_for_inference(plain)  # the CPU rule of load_model: channels-last
            rows.append(
                {
                    "attention": attention,
                    "kernel_size": k,
                    "parameters": count_parameters(plain),
                    "macs_256": count_macs(plain, 256),
                    "channels_last": models[(attention, k)].channels_last,
                }
            )
    times = {s: time_size(models, s, n, w) for s, n, w in zip(args.sizes, rounds, warmup, strict=True)}

    for row in rows:
        key = (row["attention"], row["kernel_size"])
        row["median_ms"] = {str(s): statistics.median(times[s][key]) * 1e3 for s in args.sizes}
        row["min_ms"] = {str(s): min(times[s][key]) * 1e3 for s in args.sizes}
        row["times_s"] = {str(s): times[s][key] for s in args.sizes}
    by_key = {(r["attention"], r["kernel_size"]): r for r in rows}
    ratios = {}
    for k in args.kernel_sizes:
        lka, lska = by_key[("lka", k)], by_key[("lska", k)]
        per_round = {
            s: [b / a for a, b in zip(times[s][("lka", k)], times[s][("lska", k)], strict=True)] for s in args.sizes
        }
        ratios[str(k)] = {
            "parameters": lska["parameters"] / lka["parameters"],
            "macs_256": lska["macs_256"] / lka["macs_256"],
            "time": {str(s): statistics.median(r) for s, r in per_round.items()},
            "time_per_round": {str(s): r for s, r in per_round.items()},
        }

    info = {
        "command": command_line(),
        "preset": str(PRESET.relative_to(ROOT)),
        "precision": "fp32",
        "batch": 1,
        "sizes": args.sizes,
        "rounds": rounds,
        "warmup": warmup,
        "kernel_sizes": args.kernel_sizes,
        "note": args.note,
        "machine": machine_info(loadavg_start),
        "models": rows,
        "lska_over_lka": ratios,
    }
    write_results(args.out, info, markdown(info))


if __name__ == "__main__":
    main()
