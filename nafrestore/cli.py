"""The ``nafrestore`` command line: each command parses its options, calls one library function and prints.

User errors (a bad config key, a missing file) print one paragraph and exit with code 2, without a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

from .errors import NafrestoreError

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
    """Turn a :class:`NafrestoreError` into its message on stderr and exit code 2."""
    try:
        yield
    except NafrestoreError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


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
    quiet: bool = typer.Option(False, "--quiet", help="Logs only, no progress bar."),
) -> None:
    """Train a model from a YAML config; prints the run directory."""
    from .engine import config_for_resume
    from .engine import train as train_run

    with user_errors():
        if config is not None and config.suffix not in (".yaml", ".yml") and "=" in str(config):
            overrides, config = [str(config), *(overrides or [])], None
        if config is None and resume is None:
            raise NafrestoreError("Give a config file (e.g. configs/lka-nafnet-w12.yaml) or --resume RUN_DIR.")
        cfg = config_for_resume(resume, config, overrides or [])
        run_dir = train_run(cfg, resume=resume, quiet=quiet)
    typer.echo(str(run_dir))


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
    "  |  nafrestore info runs/x/checkpoints/best.pt"
)
def info(
    source: Path = typer.Argument(..., help="YAML config or nafrestore checkpoint."),
    size: int = typer.Option(256, "--size", min=8, help="Square input side for the MAC count."),
) -> None:
    """Print a model's parameter count, MACs at SIZExSIZE and its level/block layout."""
    from .config import load_config
    from .models import model_from_config
    from .models.loading import model_from_checkpoint, read_checkpoint
    from .summary import count_macs, count_parameters, layout

    with user_errors():
        if source.suffix in (".yaml", ".yml"):
            cfg = load_config(source)
            name, args = cfg.model.name, cfg.model.args
            model = model_from_config(cfg.model.name, cfg.model.args, cfg.model.tlc, cfg.model.tlc_train_size)
        else:
            ckpt = read_checkpoint(source)
            model = model_from_checkpoint(ckpt, str(source))
            name, args = ckpt["model_name"], ckpt.get("model_args", {})
        in_channels = model.intro.in_channels
        macs = count_macs(model, size, in_channels)
    typer.echo(f"model:      {name} {args}")
    typer.echo(f"parameters: {count_parameters(model):,}")
    typer.echo(f"MACs:       {macs / 1e9:.3f} G at {in_channels}x{size}x{size}")
    typer.echo(f"TLC:        {'on' if model.tlc_enabled else 'off'}")
    for line in layout(model):
        typer.echo(f"  {line}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="nafrestore")


if __name__ == "__main__":
    sys.exit(main())
