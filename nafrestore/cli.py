"""The ``nafrestore`` command line: each command parses its options, calls one library function and prints.

User errors (a bad config key, a missing file) print one paragraph and exit with code 2, without a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from .errors import NafrestoreError
from .utils.limits import DEFAULT_MAX_IMAGE_MEGAPIXELS, ENV_MAX_IMAGE_MEGAPIXELS, LIMIT_OPTION, image_limit

# Each command imports what it runs inside its own function: the library imports torch, and with every command's
# imports at the top `nafrestore --help` took 2.9 s instead of 0.16 s (measured on a 2-core machine).

app = typer.Typer(
    name="nafrestore",
    help="Train, evaluate and run NAFNet / LKA-NAFNet image denoising and deblurring networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`NafrestoreError` into its message on stderr and its exit code (2 unless it names one)."""
    try:
        yield
    except NafrestoreError as exc:
        code = getattr(exc, "exit_code", 2)
        if not getattr(exc, "reported", False):  # e.g. the run's log already printed the interruption notice
            typer.echo(f"error: {exc}" if code in (1, 2) else str(exc), err=True)
        raise typer.Exit(code) from None


_OFFLINE_HELP = "Download nothing: use only cached or hand-placed files (also: NAFRESTORE_OFFLINE=1)."
_LIMIT_HELP = (
    f"Refuse images of more megapixels, unread: a guard against decompression bombs (default "
    f"{DEFAULT_MAX_IMAGE_MEGAPIXELS:g}; also {ENV_MAX_IMAGE_MEGAPIXELS}; inf: no limit)."
)


def _image_limit_option() -> Any:
    """``--max-image-megapixels``, the same option on every command that reads images (see :mod:`.utils.limits`)."""
    return typer.Option(None, LIMIT_OPTION, help=_LIMIT_HELP)


def _strength(value: float) -> float:
    """``--strength``: a number in [0, 1] (typer's own range check lets NaN through to a misleading message)."""
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise typer.BadParameter(f"must be a number in 0..1 (0: the input, 1: fully restored), got {value}.")
    return value


@contextlib.contextmanager
def downloads(offline: bool, quiet: bool = False) -> Iterator[None]:
    """Download settings for one command: ``--offline`` forbids downloads (without it ``$NAFRESTORE_OFFLINE``
    decides), ``--quiet`` hides the progress bars."""
    from .hub import options

    with options(offline=True if offline else None, progress=not quiet):
        yield


@app.command(
    context_settings={"allow_extra_args": False},
    epilog="Examples:  nafrestore train configs/lka-nafnet-w12-denoise-sample.yaml train.iters=2000 run.device=cpu"
    "  |  nafrestore train --resume runs/lka-nafnet-w12-denoise-sample"
    "  |  torchrun --nproc_per_node 2 -m nafrestore train configs/nafnet-sidd-width32.yaml",
)
def train(
    config: Path | None = typer.Argument(None, help="YAML config (omit with --resume to reuse the run's config)."),
    overrides: list[str] | None = typer.Argument(
        None, help="Dotted overrides, e.g. train.lr=2e-4 data.patch_size=128."
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Run directory or checkpoint to continue from."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run in the run directory."),
    quiet: bool = typer.Option(False, "--quiet", help="Logs only, no progress bar."),
    offline: bool = typer.Option(False, "--offline", help=_OFFLINE_HELP),
    max_image_mp: float | None = _image_limit_option(),
) -> None:
    """Train a model from a YAML config (model.init_from: NAME fine-tunes a pretrained model); prints the run
    directory."""
    from .engine import config_for_resume
    from .engine import train as train_run

    with user_errors(), downloads(offline, quiet), image_limit(max_image_mp):  # Ctrl-C / SIGTERM: exit 130 / 143
        if config is not None and config.suffix not in (".yaml", ".yml") and "=" in str(config):
            overrides, config = [str(config), *(overrides or [])], None
        if config is None and resume is None:
            raise NafrestoreError("Give a config file (e.g. configs/lka-nafnet-w12.yaml) or --resume RUN_DIR.")
        cfg = config_for_resume(resume, config, overrides or [])
        run_dir = train_run(cfg, resume=resume, quiet=quiet, overwrite=overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        typer.echo(str(run_dir))


@app.command(
    epilog="Examples:  nafrestore prepare sidd /data/SIDD /data/SIDD-shards"
    "  |  nafrestore prepare gopro /data/GoPro /data/GoPro-shards --crop-size 512 --step 256 --workers 8"
    "  |  nafrestore prepare folder mine/train shards/mine --val mine/val   (each with lq/ and gt/)"
    "  |  nafrestore prepare synthetic photos/train shards/photos --val photos/val"
    "  |  then: nafrestore train CONFIG data.format=shards data.shards=/data/SIDD-shards",
)
def prepare(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="Source layout: sidd, gopro, folder or synthetic."),
    src: Path = typer.Argument(
        ..., metavar="SRC", help="Source folder (folder: holding lq/ and gt/; synthetic: clean images)."
    ),
    dst: Path = typer.Argument(..., metavar="DST", help="Output folder: the shards, index.json and plan.json."),
    val: Path | None = typer.Option(
        None, "--val", help="folder/synthetic: validation source, laid out like SRC (stored as whole images)."
    ),
    crop_size: int = typer.Option(512, "--crop-size", min=8, help="Side of the training sub-images in pixels."),
    step: int = typer.Option(384, "--step", min=1, help="Stride between sub-images in pixels (overlap: size - step)."),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Samples per shard."),
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="Processes writing shards (default: one per CPU; 0: this process)."
    ),
    compression: int = typer.Option(1, "--png-compression", min=0, max=9, help="PNG (zlib) level, 0-9."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    max_image_mp: float | None = _image_limit_option(),
) -> None:
    """Crop a dataset into overlapping sub-images and write them as tar shards (lossless PNG pairs) with an index,
    for `data.format: shards`; a re-run skips the finished shards."""
    from .data.prepare import prepare_shards

    with user_errors(), image_limit(max_image_mp):
        report = prepare_shards(fmt, src, dst, val=val, crop_size=crop_size, step=step, shard_size=shard_size,
                                compression=compression, workers=workers, progress=not quiet)  # fmt: skip
    typer.echo(report.summary())


@config_app.command("show")
def config_show(
    config: Path = typer.Argument(..., help="YAML config."),
    overrides: list[str] | None = typer.Argument(None, help="Dotted overrides, e.g. train.lr=2e-4."),
) -> None:
    """Print the resolved config (defaults filled in, overrides applied) as YAML."""
    from .config import dump_config, load_config

    with user_errors():
        typer.echo(dump_config(load_config(config, overrides or [])), nl=False)


@app.command(
    epilog="Examples:  nafrestore info configs/lka-nafnet-w12.yaml --size 512"
    "  |  nafrestore info runs/x/checkpoints/best.pt  |  nafrestore info nafnet-sidd-width64"
)
def info(
    source: str = typer.Argument(
        ..., help="Pretrained model name, YAML config or preset, checkpoint, run directory or .safetensors export."
    ),
    size: int = typer.Option(256, "--size", min=8, help="Square input side for the MAC count."),
) -> None:
    """Print a model's parameter count, MACs at SIZExSIZE and its level/block layout."""
    from .loading import load_spec
    from .models import in_channels as image_channels
    from .summary import count_macs, count_parameters, layout

    with user_errors():
        # The loader `infer` uses; a config needs no weights here, and a pretrained model's are not downloaded.
        spec = load_spec(source, require_weights=False)
        model = spec.build()
        in_channels = image_channels(model)
        macs = count_macs(model, size, in_channels)
    typer.echo(f"model:      {spec.model_name} {spec.model_args}")
    typer.echo(f"parameters: {count_parameters(model):,}")
    typer.echo(f"MACs:       {macs / 1e9:.3f} G at {in_channels}x{size}x{size}")
    typer.echo(f"TLC:        {'on' if model.tlc_enabled else 'off'}")
    for line in layout(model):
        typer.echo(f"  {line}")


@app.command(
    "eval",
    epilog="Examples:  nafrestore eval --pred restored/ --gt clean/ --metrics psnr,ssim,ms-ssim,lpips,rfid"
    "  |  nafrestore eval runs/demo --ckpt best --metrics psnr,ssim --json runs/demo/eval.json"
    "  |  nafrestore eval configs/my.yaml --ckpt model.pt --data photos/ --report report/"
    "  |  nafrestore eval --model nafnet-sidd-width32 --data photos/"
    "  |  nafrestore eval --pred NAFNet=out/nafnet --pred ours=out/ours --gt clean/ --lq noisy/ --report cmp/",
)
def eval_command(
    source: Path | None = typer.Argument(None, help="Run directory or YAML config of the model to evaluate."),
    pred: list[str] | None = typer.Option(
        None,
        "--pred",
        help="Folder of restored images (instead of a model); repeat it (NAME=FOLDER to name each) to compare models.",
    ),
    gt: Path | None = typer.Option(
        None, "--gt", help="Folder of ground-truth images, matched by relative path and stem."
    ),
    lq: Path | None = typer.Option(
        None, "--lq", help="With --pred/--gt: the degraded inputs, scored as the input row."
    ),
    ckpt: str = typer.Option("best", "--ckpt", help="best, last or a checkpoint path."),
    model: str | None = typer.Option(
        None, "--model", help="A pretrained model's name (`nafrestore models`), or a config with --ckpt WEIGHTS."
    ),
    data: str = typer.Option(
        "val", "--data", help="`val` (the config's / preset's validation set) or a folder of clean images."
    ),
    metrics: str = typer.Option("psnr,ssim", "--metrics", help="Comma-separated: psnr,ssim,ms-ssim,lpips,rfid,kid."),
    y_channel: bool = typer.Option(False, "--y-channel", help="PSNR/SSIM/MS-SSIM on the BT.601 Y channel."),
    crop_border: int = typer.Option(0, "--crop-border", min=0, help="Pixels removed from each side before scoring."),
    raw: bool = typer.Option(False, "--raw", help="Score raw floats instead of 8-bit rounded images."),
    lpips_net: str = typer.Option("alex", "--lpips-net", help="alex or vgg."),
    fid_patch: int = typer.Option(256, "--fid-patch", min=16, help="Patch side for rFID/KID."),
    fewer_scales: bool = typer.Option(False, "--allow-fewer-scales", help="MS-SSIM on small images with fewer scales."),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", envvar="NAFRESTORE_WEIGHTS_DIR", help="LPIPS/FID weights."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch: int = typer.Option(4, "--batch", min=1, help="Same-size images per batch."),
    tile: int | None = typer.Option(None, "--tile", min=16, help="Restore in tiles of this size."),
    overlap: int = typer.Option(32, "--overlap", min=0, help="Tile overlap."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the summary and per-image values as JSON."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Write per-image values as CSV."),
    report: Path | None = typer.Option(
        None, "--report", help="Write an HTML report here: report.html, its images, report.json, comparison.png."
    ),
    save_images: Path | None = typer.Option(None, "--save-images", help="Keep the restored images here."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    offline: bool = typer.Option(False, "--offline", help=_OFFLINE_HELP),
    max_image_mp: float | None = _image_limit_option(),
) -> None:
    """Score restored images (or a model on a dataset) with PSNR, SSIM, MS-SSIM, LPIPS, rFID and KID."""
    from . import evaluation as ev
    from .report import write_eval_report

    with user_errors(), downloads(offline, quiet), image_limit(max_image_mp):
        if pred and len(pred) > 1 and save_images is not None:
            raise NafrestoreError(
                "--save-images keeps the images a model restores; with several --pred folders they are on disk "
                "already: leave it out."
            )
        result = ev.evaluate(
            source, pred=pred or None, gt=gt, lq=lq, ckpt=ckpt, model=model, data=data, metrics=metrics,
            device=device, batch_size=batch,
            tile=tile, overlap=overlap, save_dir=save_images, report_dir=report, progress=not quiet,
            y_channel=y_channel, crop_border=crop_border, quantize=not raw, lpips_net=lpips_net, fid_patch=fid_patch,
            weights_dir=weights_dir, allow_fewer_scales=fewer_scales,
        )  # fmt: skip
        typer.echo(ev.format_table(result))  # the scores first: a file that cannot be written costs nothing else
        for path, write in ((json_path, ev.write_json), (csv_path, ev.write_csv)):
            if path is not None:
                write(result, path)
        if report is not None:
            typer.echo(f"report: {write_eval_report(result, report)}")


@app.command(
    "report",
    epilog="Examples:  nafrestore report runs/demo -o runs/demo/report-html"
    "  |  nafrestore report old-report/ -o shared/report   (the page again, images copied)"
    "  |  nafrestore report eval.json -o report/   (tables only: an eval JSON has no images)",
)
def report_command(
    source: Path = typer.Argument(
        ..., help="A report folder or its report.json, an `eval --json` file, or a training run directory."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write report.html (and its files) into."),
    title: str | None = typer.Option(None, "--title", help="The page's title."),
) -> None:
    """Write the HTML report again from what is on disk, scoring nothing: a run's curves and config, its scores and
    images; prints the page's path."""
    from .report import build_report

    with user_errors():
        page = build_report(source, output, title=title)
    typer.echo(str(page))


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def _print_weights(weights_dir: Path | None) -> None:
    from .metrics import weights_status

    rows = weights_status(weights_dir)
    for row in rows:
        typer.echo(f"{row['status']:<18} {row['name']:<40} {row['purpose']}")
        typer.echo(f"{'':<18} {row['path'] or 'get it from ' + row['url']}")
    if any(row["status"] != "verified" for row in rows):
        typer.echo(
            "Missing files are downloaded when a metric first needs them (not with --offline / NAFRESTORE_OFFLINE=1); "
            "or put them in --weights-dir, $NAFRESTORE_WEIGHTS_DIR or $TORCH_HOME/hub/checkpoints."
        )


def _fetch_named(names: list[str], weights_dir: Path | None) -> None:
    """``models --download``: registry models and metric weight files, by name."""
    from .metrics.weights import KNOWN_WEIGHTS, resolve_weights
    from .models.pretrained import find_pretrained, model_names, pretrained_file
    from .registry import did_you_mean

    for name in names:
        if name in KNOWN_WEIGHTS:
            path = resolve_weights(name, weights_dir)
        elif find_pretrained(name) is not None:
            path = pretrained_file(name)
        else:
            hint = did_you_mean(name, [*model_names(), *KNOWN_WEIGHTS])
            raise NafrestoreError(
                f"--download {name}: not a pretrained model or metric weights file.{hint} `nafrestore models` lists "
                f"both."
            )
        typer.echo(f"{name}: {path}")


@app.command(
    epilog="Examples:  nafrestore models  |  nafrestore models --download nafnet-sidd-width32"
    "  |  NAFRESTORE_MIRROR=https://my.mirror/nafnet nafrestore models --download nafnet-gopro-width64"
)
def models(
    download: list[str] | None = typer.Option(
        None, "--download", help="Fetch this model or weights file now (repeatable), e.g. before going offline."
    ),
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", envvar="NAFRESTORE_WEIGHTS_DIR", help="Extra folder for the metric weights."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """List the pretrained models (name, task, size, published figure, license, whether cached and verified) and
    the metric networks' weight files."""
    from .hub import cache_dir, is_offline, mirrors
    from .models.pretrained import ALIASES, PRETRAINED, model_status

    with user_errors(), downloads(False, quiet):
        if download:
            _fetch_named(download, weights_dir)
            return
        rows = [model_status(m) for m in PRETRAINED.values()]
    aliases = {target: alias for alias, target in ALIASES.items()}
    typer.echo(f"{'name':<28} {'size':>10}  {'published (PSNR / SSIM)':<24} status")
    for row in rows:
        alias = f" (= {aliases[row['name']]})" if row["name"] in aliases else ""
        where = f" {row['path']}" if row["path"] else ""
        typer.echo(f"{row['name']:<28} {_size(row['size']):>10}  {row['published']:<24} {row['status']}{where}")
        typer.echo(f"    {row['task']}{alias}; {row['license']}")
    typer.echo("")
    typer.echo("Metric weights (LPIPS, rFID/KID):")
    _print_weights(weights_dir)
    typer.echo("")
    offline = " (offline: nothing is downloaded)" if is_offline() else ""
    mirror = f"; mirrors first: {', '.join(mirrors())}" if mirrors() else ""
    typer.echo(f"Downloads go to {cache_dir()} ($NAFRESTORE_HOME){mirror}{offline}.")


@app.command(epilog="Example:  nafrestore weights --weights-dir ~/weights")
def weights(
    weights_dir: Path | None = typer.Option(
        None, "--weights-dir", envvar="NAFRESTORE_WEIGHTS_DIR", help="Extra folder."
    ),
) -> None:
    """List the pretrained files LPIPS and rFID/KID need, and whether each is present and verified."""
    _print_weights(weights_dir)
    typer.echo("`nafrestore models` lists these and the pretrained restoration models.")


@app.command(
    epilog="Examples:  nafrestore infer photos/ -o restored/   (the default model: real camera noise)"
    "  |  nafrestore infer photos/ -o restored/ --strength 0.7"
    "  |  nafrestore infer photos/ -o restored/ --ckpt runs/demo/checkpoints/best.pt"
    "  |  nafrestore infer blurry/ -o out/ --model nafnet-gopro-width32   (downloaded once)"
    "  |  nafrestore infer noisy/ -o out/ --model configs/nafnet-sidd-width64.yaml --ckpt NAFNet-SIDD-width64.pth"
    "  |  nafrestore infer big.tif -o out/ --ckpt model.safetensors --tile 512 --overlap 32 --tta --device cuda"
    " --precision bf16",
)
def infer(
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (relative paths are kept)."),
    ckpt: str | None = typer.Option(
        None, "--ckpt", help="Checkpoint, run dir, .safetensors, bare weights or a model name (default: `default`)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="A pretrained model's name, or a config/preset naming the architecture of --ckpt."
    ),
    glob: str | None = typer.Option(None, "--glob", help="Only files whose name or relative path matches."),
    suffix: str = typer.Option("", "--suffix", help="Added to each output's stem, e.g. _restored."),
    ext: str | None = typer.Option(None, "--ext", help="Output format (png, jpg, tif, ...); default: the input's."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo outputs that already exist."),
    tile: int | None = typer.Option(None, "--tile", min=16, help="Tile side for tiled inference."),
    overlap: int = typer.Option(32, "--overlap", min=0, help="Tile overlap in pixels."),
    max_mp: float | None = typer.Option(None, "--max-megapixels", help="Tile larger images (default: 4 on CPU)."),
    tlc: bool | None = typer.Option(None, "--tlc/--no-tlc", help="Test-time local converter (default: ckpt's)."),
    tta: bool = typer.Option(False, "--tta", help="x8 self-ensemble (8 dihedral transforms averaged)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto (bf16 on a CPU where measured faster and faithful, else fp32), fp32, bf16 or fp16 (GPU only).",
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="Same-size images per forward pass."),
    strength: float = typer.Option(
        1.0, "--strength", callback=_strength, help="1: fully restored, 0: the input, between: a blend of the two."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    offline: bool = typer.Option(False, "--offline", help=_OFFLINE_HELP),
    max_image_mp: float | None = _image_limit_option(),
) -> None:
    """Restore image files, keeping names, formats, bit depth, channels and alpha; exit 1 if any file failed."""
    from .inference.api import load_model
    from .inference.batch import restore_files
    from .inference.precision import choose_precision
    from .loading import resolve_source

    with user_errors(), downloads(offline, quiet), image_limit(max_image_mp):
        source, weights = resolve_source(ckpt, model)
        if ckpt is None and model is None:
            from .models.pretrained import find_pretrained

            chosen = find_pretrained(source)
            typer.echo(f"No --ckpt: restoring with the default model, {chosen.name} ({chosen.task}).", err=True)
        net = load_model(source, weights=weights, device=device, tlc=tlc)
        choice = choose_precision(net, precision)
        if precision == "auto":
            typer.echo(choice.reason, err=True)
        precision = choice.precision
        report = restore_files(net, inputs, output, glob=glob, suffix=suffix, ext=ext, overwrite=overwrite,
                               tile=tile, overlap=overlap, tta=tta, precision=precision, batch=batch,
                               max_megapixels=max_mp, strength=strength, progress=not quiet)  # fmt: skip
    typer.echo(report.summary())
    if report.failed:
        raise typer.Exit(1)


@app.command(
    epilog="Examples:  nafrestore export runs/demo --format onnx -o demo.onnx"
    "  |  nafrestore export runs/demo/checkpoints/best.pt --format safetensors -o demo.safetensors"
    "  |  nafrestore export --model configs/nafnet-sidd-width32.yaml --ckpt NAFNet-SIDD-width32.pth"
    " --format torchscript -o sidd32.pt"
    "  |  nafrestore export nafnet-sidd-width32 --format onnx -o sidd32.onnx",
)
def export(
    checkpoint: str | None = typer.Argument(
        None, help="Pretrained model name, checkpoint, run dir or .safetensors (or use --ckpt)."
    ),
    fmt: str = typer.Option(..., "--format", "-f", help="onnx, safetensors or torchscript."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write."),
    ckpt: str | None = typer.Option(None, "--ckpt", help="Weights (with --model for bare state dicts)."),
    model: str | None = typer.Option(
        None, "--model", help="A pretrained model's name, or a config/preset naming the architecture of --ckpt."
    ),
    tlc: bool | None = typer.Option(None, "--tlc/--no-tlc", help="TLC in the exported model (default: ckpt's)."),
    offline: bool = typer.Option(False, "--offline", help=_OFFLINE_HELP),
) -> None:
    """Export a trained model: ONNX (dynamic H, W), safetensors (weights + config) or TorchScript."""
    from .inference.export import export_model
    from .loading import resolve_source

    with user_errors(), downloads(offline):
        if checkpoint is not None and ckpt is not None:
            raise NafrestoreError("Give the checkpoint either as the argument or with --ckpt, not both.")
        source, weights = resolve_source(checkpoint or ckpt, model)
        path = export_model(source, output, format=fmt, weights=weights, tlc=tlc)
    typer.echo(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {fmt})")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="nafrestore")


if __name__ == "__main__":
    sys.exit(main())
