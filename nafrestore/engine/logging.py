"""What a run records: ``train.log``, ``metrics.jsonl``, TensorBoard events, ``curves.png`` and a progress bar.

Only rank 0 writes (other ranks get a disabled :class:`RunLogger`). Files in the run directory:

* ``train.log``: the Python log (``logging.getLogger("nafrestore")``), also shown on the console, except the error
  that ends a run (the command prints that one);
* ``metrics.jsonl``: one JSON object per line, ``{"step", "loss", "lr", "it_s", ...}`` per log step and
  ``{"step", "val/psnr", "val/ssim", ...}`` per validation; on resume, lines past the resumed step are dropped;
* ``tensorboard/``: the same scalars as TensorBoard events (when ``tensorboard`` is installed);
* ``curves.png``: training loss, learning rate and validation PSNR against the iteration, redrawn at each
  validation (matplotlib's Agg canvas, no GUI).
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..utils.files import atomic_write, make_folder, read_metrics

LOGGER_NAME = "nafrestore"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_FILE_ONLY = "nafrestore_file_only"  # a log record's attribute: written to train.log, not shown on the console


class _TqdmHandler(logging.Handler):
    """Console handler that writes through ``tqdm.write`` so log lines do not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging must never crash training
            self.handleError(record)


def _finite(value: Any) -> Any:
    # JSON has no NaN/inf; write them as strings so every line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class RunLogger:
    """Logging for one training session.

    Args:
        run_dir: the run directory (files are written there), or None for nothing on disk.
        enabled: False on ranks other than 0: no files, no bar, no console lines (warnings still reach stderr).
        quiet: no progress bar (log lines only).
        total_steps: the run's length, for the progress bar.
        start_step: the step the session starts at (resume); later records in ``metrics.jsonl`` are dropped.
        curve_metric: the validation metric plotted in ``curves.png`` (e.g. ``psnr``).
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        *,
        enabled: bool = True,
        quiet: bool = False,
        total_steps: int = 0,
        start_step: int = 0,
        curve_metric: str = "psnr",
    ) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.enabled = enabled and self.run_dir is not None
        self.curve_metric = curve_metric
        self.logger = logging.getLogger(LOGGER_NAME)
        self._handlers: list[logging.Handler] = []
        self._old_level = self.logger.level
        self._old_propagate = self.logger.propagate
        self._tb: Any = None
        self._bar: Any = None
        self.history: list[dict[str, Any]] = []
        if not self.enabled:
            return
        assert self.run_dir is not None
        make_folder(self.run_dir)
        self._setup_logging(quiet)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.history = [r for r in read_metrics(self.metrics_path) if int(r.get("step", 0)) <= start_step]
        self._rewrite_metrics()
        self._jsonl = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._tb = self._open_tensorboard(start_step)
        if not quiet:
            self._bar = tqdm(
                total=total_steps, initial=start_step, unit="it", dynamic_ncols=True, smoothing=0.05, file=sys.stderr
            )

    # -- setup ---------------------------------------------------------------------------------------------------

    def _setup_logging(self, quiet: bool) -> None:
        assert self.run_dir is not None
        file_handler = logging.FileHandler(self.run_dir / "train.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        console: logging.Handler = logging.StreamHandler(sys.stderr) if quiet else _TqdmHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(lambda record: not getattr(record, _FILE_ONLY, False))
        for handler in (file_handler, console):
            handler.setLevel(logging.INFO)
            self.logger.addHandler(handler)
            self._handlers.append(handler)
        self.logger.setLevel(logging.INFO)
        # Our own handlers show the messages; passing them on to the root logger too would print them twice.
        self.logger.propagate = False

    def _rewrite_metrics(self) -> None:
        # Drop records past the resumed step (written after the last checkpoint of an interrupted session), via a
        # temporary file so that a kill here cannot lose the file.
        if not self.metrics_path.exists():
            return
        with atomic_write(self.metrics_path, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self.history))

    def _open_tensorboard(self, start_step: int) -> Any:
        assert self.run_dir is not None
        try:  # here, not at the top: tensorboard is an optional extra (pip install nafrestore[tensorboard])
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed (or broken): the other records are enough
            self.logger.debug("tensorboard is not importable; no TensorBoard events")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step or None)

    # -- messages ------------------------------------------------------------------------------------------------

    def info(self, msg: str) -> None:
        if self.enabled:
            self.logger.info(msg)

    def warning(self, msg: str) -> None:
        # Warnings are shown from every rank: a problem on rank 3 matters too.
        self.logger.warning(msg if self.enabled else f"[rank != 0] {msg}")

    def error(self, msg: str) -> None:
        """Record the error that ends the run in ``train.log``. Not on the console: the exception carries the
        message to the caller, and the command line prints it once (a log line as well showed it twice)."""
        if self.enabled:
            self.logger.error(msg, extra={_FILE_ONLY: True})

    # -- records -------------------------------------------------------------------------------------------------

    def record(self, step: int, values: Mapping[str, Any]) -> None:
        """Append ``{"step": step, **values}`` to metrics.jsonl and TensorBoard."""
        if not self.enabled:
            return
        rec = {"step": int(step), **{k: _finite(v) for k, v in values.items()}}
        self.history.append(rec)
        self._jsonl.write(json.dumps(rec) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key if "/" in key else f"train/{key}", value, step)
            self._tb.flush()

    def progress(self, step: int, **postfix: float) -> None:
        """Move the progress bar to ``step`` and show ``postfix`` (loss, lr)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix({k: f"{v:.3g}" for k, v in postfix.items()}, refresh=False)

    def plot_curves(self) -> Path | None:
        """Redraw ``curves.png`` from the history: loss, learning rate, validation metric against the step."""
        if not self.enabled:
            return None
        assert self.run_dir is not None
        try:  # here, not at the top: importing matplotlib adds ~0.5 s to `nafrestore train`'s start (measured)
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except Exception:  # matplotlib missing: no plot, no crash
            return None
        train = [r for r in self.history if isinstance(r.get("loss"), int | float)]
        key = f"val/{self.curve_metric}"
        val = [r for r in self.history if isinstance(r.get(key), int | float)]
        inputs = [r[f"val/input_{self.curve_metric}"] for r in self.history if f"val/input_{self.curve_metric}" in r]
        fig = Figure(figsize=(12, 3.6), layout="constrained")
        FigureCanvasAgg(fig)  # Agg canvas: renders without a display and without touching pyplot's global state
        ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
        ax_loss.set(title="training loss", xlabel="iteration")
        lrs = [r for r in train if isinstance(r.get("lr"), int | float)]
        ax_lr.plot([r["step"] for r in lrs], [r["lr"] for r in lrs], lw=1)
        ax_lr.set(title="learning rate", xlabel="iteration")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax_val.plot([r["step"] for r in val], [r[key] for r in val], marker="o", ms=3, label="restored")
        if inputs:
            ax_val.axhline(inputs[-1], color="gray", ls="--", lw=1, label="degraded input")
        ax_val.set(title=f"validation {self.curve_metric.upper()}", xlabel="iteration")
        ax_val.legend(loc="lower right", fontsize="small")
        for ax in (ax_loss, ax_lr, ax_val):
            ax.grid(alpha=0.3)
        path = self.run_dir / "curves.png"
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100)
        return path

    def close(self) -> None:
        """Close the bar, files and handlers, and give the ``nafrestore`` logger back its previous settings."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.enabled and not self._jsonl.closed:
            self._jsonl.close()
        for handler in self._handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self._handlers.clear()
        if self.enabled:
            self.logger.setLevel(self._old_level)
            self.logger.propagate = self._old_propagate


__all__ = ["LOGGER_NAME", "RunLogger"]
