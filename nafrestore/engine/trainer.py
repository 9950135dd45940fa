"""The training loop: ``train(cfg)`` builds a run from a config, trains, validates, checkpoints and resumes.

A run lives in ``cfg.run_dir`` (see :mod:`.logging` and :mod:`.checkpoint` for the files). Read this module top
to bottom: the run state, how it is built (:func:`_setup`), the helpers the loop calls (validation, checkpoints,
logging, stopping), then the loop itself (:func:`_loop`) and :func:`train`. One step is :func:`.step.train_step`.

Iteration-based runs are reproducible: on the CPU with a fixed seed, a run gives the same weights alone, beside
other work, or interrupted at any step and resumed. Nothing that changes numerics is chosen by timing (the memory
format follows a rule, :func:`.build.choose_memory_format`), and the checkpoint restores the model, optimizer,
schedule, gradient scaler, EMA, step, best score, every random state, the memory format and the intra-op thread
count (which decides how CPU sums split), while :class:`~nafrestore.data.BatchStream` restores the data position
(training batches are a function of (seed, rank, epoch) only; for shards also of the process and worker counts and
the batch size, which the checkpoint stores and a resume must keep). A run with ``train.time_budget_min``
schedules by elapsed time, so its weights depend on the machine's speed and load (the log says so at the start).

Multi-process training: launched by ``torchrun``, each process trains on its shard of every batch (``batch_size``
is per process), rank 0 alone logs and writes files; all processes agree at every step on non-finite losses, stop
requests (signals, time budget) and the clock, so they always leave the loop at the same step.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import Config, config_to_dict, dump_config
from ..data import BatchStream, check_data_order
from ..errors import ConfigError, NafrestoreError
from ..evaluation import loader_items, model_restore, score
from ..losses import build_loss
from ..metrics import METRIC_INFO
from ..models import in_channels
from ..utils import distributed as du
from ..utils.files import atomic_write, read_metrics, remove_stale_temporaries
from .build import build_loaders, build_optimization, build_training_model, build_val_suite, wrap_model
from .checkpoint import (
    claim_run_dir,
    config_for_resume,
    load_checkpoint,
    make_checkpoint,
    model_state,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    weights_are_finite,
)
from .ema import ModelEMA
from .logging import RunLogger
from .optim import WarmupCosineSchedule
from .signals import StopSignals, TrainingInterrupted, resume_command
from .step import train_step


class TrainingDivergedError(NafrestoreError):
    """``train.max_bad_steps`` non-finite losses in a row: the run stopped, its last good checkpoint kept."""


# ----------------------------------------------------------------------------------------------------------------
# Run state


@dataclass
class LogWindow:
    """What the loop gathers between two log records (every ``train.log_every`` steps)."""

    t0: float  # monotonic time the window opened
    step0: int  # step the window opened at
    loss_sum: float = 0.0
    n: int = 0  # finite losses summed
    skipped: int = 0  # non-finite steps skipped
    paused: float = 0.0  # seconds spent validating and checkpointing, left out of the it/s figure

    def add(self, out: Mapping[str, Any]) -> None:
        if out["skipped"]:
            self.skipped += 1
        else:
            self.loss_sum += out["loss"]
            self.n += 1


@dataclass
class TrainState:
    """Everything a training session holds. ``model`` is what forward/backward go through (DDP- and/or
    compile-wrapped), ``raw`` the plain module inside it."""

    cfg: Config
    info: du.DistInfo
    device: torch.device
    precision: str
    memory_format: str  # a key of MEMORY_FORMATS: the model's and the training batches'
    model: nn.Module
    raw: nn.Module
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosineSchedule
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    batches: BatchStream
    val_loader: DataLoader | None
    suite: Any  # MetricSuite of val.metrics, or None without validation data
    log: RunLogger
    step: int = 0
    best: float | None = None
    best_step: int | None = None
    elapsed: float = 0.0  # training wall-clock seconds, all sessions (rank 0's clock, shared by every rank)
    bad_steps: int = 0
    input_logged: bool = False  # the degraded input is scored once per run
    saved_step: int | None = None  # the step of the checkpoints/last.pt on disk (None: none yet)
    val_finite: bool = True  # the latest validation scored finite values
    probe: torch.Tensor | None = None  # a fixed input whose output must stay finite for a checkpoint to be written
    window: LogWindow = field(default_factory=lambda: LogWindow(time.monotonic(), 0))
    _clock0: float = 0.0  # monotonic time at which ``elapsed`` was last synchronised
    _elapsed0: float = 0.0

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and best.pt stores: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.raw

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


# ----------------------------------------------------------------------------------------------------------------
# Setup


def _setup(
    cfg: Config, info: du.DistInfo, device: torch.device, resume: str | Path | None, quiet: bool, datasets: Any
) -> TrainState:
    """Build model, optimizer, schedule, data and logger; restore a checkpoint when resuming."""
    ckpt_path = resume_checkpoint(resume) if resume is not None else None
    ckpt = load_checkpoint(ckpt_path) if ckpt_path is not None else None
    raw, ema, memory_format, why_format = build_training_model(cfg, info, device, ckpt, f"checkpoint {ckpt_path}")
    optimizer, scheduler, scaler, precision = build_optimization(cfg, raw, device, ckpt)
    step = int(ckpt["step"]) if ckpt is not None else 0
    loader, val_loader = build_loaders(cfg, info, datasets)
    batches = BatchStream(loader, start_step=step)
    if ckpt is not None:
        check_data_order(ckpt.get("data_order"), batches.order_settings, str(ckpt_path))
    state = TrainState(
        cfg=cfg,
        info=info,
        device=device,
        precision=precision,
        memory_format=memory_format,
        model=wrap_model(raw, cfg, info, device),
        raw=raw,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        loss_fn=build_loss([(t.name, t.weight) for t in cfg.train.loss]).to(device),
        batches=batches,
        val_loader=val_loader,
        suite=build_val_suite(cfg, device) if val_loader is not None else None,
        log=RunLogger(
            cfg.run_dir,
            enabled=info.is_main,
            quiet=quiet,
            total_steps=cfg.train.iters,
            start_step=step,
            curve_metric="psnr" if "psnr" in cfg.val.metrics else cfg.val.best_metric,
        ),
        step=step,
    )
    state.log.info(why_format)
    if ckpt is not None:
        _reuse_threads(state, ckpt.get("threads"))
        _restore_run_state(state, ckpt)
        state.saved_step = step
    elif cfg.model.init_from is not None:
        state.log.info(f"weights initialised from {cfg.model.init_from} (model.init_from)")
    # Seeded on its own, so the probe never moves the training randomness.
    state.probe = torch.rand(1, in_channels(raw), 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    state._clock0 = time.monotonic()
    return state


def _reuse_threads(s: TrainState, threads: int | None) -> None:
    """Compute with the checkpoint's intra-op thread count (None: an older checkpoint, unchanged). The count decides
    how CPU convolutions and reductions split their sums, so another one (another OMP_NUM_THREADS, another machine)
    would round differently and the resumed weights would drift from an uninterrupted run's."""
    now = torch.get_num_threads()
    if threads and threads != now:
        torch.set_num_threads(int(threads))
        s.log.info(f"{threads} intra-op threads, as before the interruption (this process had {now}), so that the "
                   "resumed run rounds as an uninterrupted one")  # fmt: skip


def _restore_run_state(s: TrainState, ckpt: Mapping[str, Any]) -> None:
    """Best score, clock and random states of the checkpoint (the RNG last, so nothing above shifts its streams)."""
    s.best, s.best_step = ckpt.get("best_metric"), ckpt.get("best_step")
    s.elapsed = s._elapsed0 = float(ckpt.get("elapsed_s", 0.0))
    s.input_logged = any(
        "val/input_psnr" in r and r.get("step", 0) <= s.step for r in read_metrics(s.run_dir / "metrics.jsonl")
    )
    rng = ckpt.get("rng")
    if rng:
        ranks = rng.get("ranks")
        set_rng_state(ranks[s.info.rank] if ranks and len(ranks) == s.info.world_size else rng)


# ----------------------------------------------------------------------------------------------------------------
# What the loop calls


def _start(s: TrainState) -> None:
    """Write config.yaml and the opening log lines (rank 0)."""
    if s.info.is_main:
        # Leftovers of a process killed while writing a checkpoint (no other process writes them now).
        for name in ("last.pt", "best.pt"):
            remove_stale_temporaries(s.ckpt_dir, name)
        with atomic_write(s.run_dir / "config.yaml", "w", encoding="utf-8") as f:
            f.write(dump_config(s.cfg))
    n_params = sum(p.numel() for p in s.raw.parameters())
    tc = s.cfg.train
    what = f"resuming at step {s.step}" if s.step else "starting"
    world = f", {s.info.world_size} processes x batch {tc.batch_size}" if s.info.distributed else ""
    s.log.info(
        f"{what}: {s.cfg.model.name} ({n_params / 1e6:.3f} M parameters) on {s.device}, precision {s.precision}"
        f"{world}, {tc.iters} iterations"
        + (f" or {tc.time_budget_min:g} min" if tc.time_budget_min else "")
        + f"; run directory {s.run_dir}"
    )
    if tc.time_budget_min:
        s.log.info(
            f"train.time_budget_min {tc.time_budget_min:g}: the learning rate follows the clock as well as the steps "
            "(whichever is further along), so the weights depend on the machine's speed and load, and a resumed run "
            "differs from an uninterrupted one; train.time_budget_min=null schedules by iterations alone, the same "
            "weights for the same run.seed"
        )
    s.window = LogWindow(time.monotonic(), s.step)


def _skipped_step(s: TrainState, out: Mapping[str, Any]) -> None:
    """Warn about a non-finite step; after ``train.max_bad_steps`` in a row, stop the run."""
    tc = s.cfg.train
    s.log.warning(
        f"step {s.step}: non-finite loss or gradients ({out['loss']}); step skipped "
        f"({s.bad_steps} in a row, the run stops at {tc.max_bad_steps})"
    )
    if s.bad_steps >= tc.max_bad_steps:
        raise TrainingDivergedError(
            f"Training diverged: {s.bad_steps} non-finite losses in a row (steps {s.step - s.bad_steps + 1} to "
            f"{s.step}). {_kept_checkpoint(s)}. Lower train.lr, set train.grad_clip (e.g. 0.01) or use "
            f"train.precision=fp32, then {_what_next(s)}."
        )


def _log_window(s: TrainState, out: Mapping[str, Any], lr: float) -> None:
    """The periodic log record: mean loss, learning rate and speed since the last one."""
    w, now = s.window, time.monotonic()
    # Iterations per second of training proper: validation and checkpoint time left out.
    it_s = (s.step - w.step0) / max(now - w.t0 - w.paused, 1e-9)
    loss = w.loss_sum / w.n if w.n else math.nan
    rec = {"loss": loss, "lr": lr, "it_s": it_s, "epoch": s.step // s.batches.per_epoch}
    if out.get("grad_norm") is not None:
        rec["grad_norm"] = out["grad_norm"]
    if w.skipped:
        rec["skipped"] = w.skipped
    s.log.record(s.step, rec)
    s.log.info(f"step {s.step}/{s.cfg.train.iters}  loss {loss:.4f}  lr {lr:.3e}  {it_s:.2f} it/s")
    s.window = LogWindow(now, s.step)


def _sync_stop(s: TrainState, stop: StopSignals) -> int | None:
    """Update ``s.elapsed`` (rank 0's clock) and return the signal that asks every process to stop, if any."""
    elapsed = s._elapsed0 + time.monotonic() - s._clock0
    signum = stop.signum or 0
    if s.info.distributed:
        stats = torch.tensor([float(signum), elapsed if s.info.is_main else 0.0], dtype=torch.float64)
        if s.device.type == "cuda":
            stats = stats.to(s.device)
        signum_f, elapsed = du.all_reduce_sum(stats).tolist()
        signum = int(signum_f) if signum_f else 0
        if signum and signum not in (signal.SIGINT, signal.SIGTERM):
            signum = signal.SIGTERM  # several processes got different signals
    s.elapsed = elapsed
    return signum or None


@contextlib.contextmanager
def _paused(s: TrainState) -> Iterator[None]:
    """Time spent inside is left out of the speed figure."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        s.window.paused += time.monotonic() - t0


@contextlib.contextmanager
def _inference_mode(s: TrainState, model: nn.Module) -> Iterator[None]:
    """Validation conditions: eval mode, TLC on when configured (training model only during the pass), RNG
    untouched (a validation must not shift the training randomness, or a resumed run would differ)."""
    rng, was_training = rng_state(), model.training
    toggle = s.cfg.model.tlc and model is s.raw
    model.eval()
    if toggle:
        s.raw.set_tlc(s.cfg.model.tlc_train_size)
    try:
        yield
    finally:
        if toggle:
            s.raw.set_tlc(None)
        model.train(was_training)
        set_rng_state(rng)


def _validate(s: TrainState) -> None:
    """Score the validation set (in full precision, whatever the training precision) and record it."""
    if s.val_loader is None:
        return
    vc, model = s.cfg.val, s.eval_model
    input_suite = None if s.input_logged else build_val_suite(s.cfg, s.device)
    with _paused(s), _inference_mode(s, model):
        res = score(
            loader_items(s.val_loader),
            s.suite,
            restore=model_restore(model, tile=vc.tile, overlap=vc.overlap),
            input_suite=input_suite,
        )
    record = {**res.summary, **{f"input_{k}": v for k, v in (res.input_summary or {}).items()}}
    s.log.record(s.step, {**{f"val/{k}": v for k, v in record.items()}, "val/n_images": float(res.n_images)})
    shown = "  ".join(f"{k} {v:.4f}" for k, v in res.summary.items())
    s.log.info(f"validation at step {s.step} ({res.n_images} images, {'EMA' if s.ema else 'raw'}): {shown}")
    if res.input_summary and "psnr" in res.summary:
        gain = res.summary["psnr"] - res.input_summary["psnr"]
        s.log.info(f"degraded input PSNR {res.input_summary['psnr']:.2f} dB -> restored {res.summary['psnr']:.2f} dB "
                   f"({gain:+.2f} dB)")  # fmt: skip
    s.input_logged = True
    s.val_finite = all(math.isfinite(v) or v == math.inf for v in res.summary.values())  # inf: a perfect PSNR
    _keep_best(s, res.summary.get(vc.best_metric, math.nan))
    s.log.plot_curves()


def _validate_keeping_checkpoint(s: TrainState) -> None:
    """:func:`_validate`; if it fails (e.g. an unreadable validation file), last.pt is written before the error
    propagates, so a validation problem never costs the training done so far."""
    try:
        _validate(s)
    except NafrestoreError:
        if _unhealthy(s) is None:
            _save_last(s)
        raise


def _keep_best(s: TrainState, value: float) -> None:
    """Write best.pt when ``value`` of ``val.best_metric`` beats the best so far (its direction from the registry)."""
    metric = s.cfg.val.best_metric
    sign = 1.0 if METRIC_INFO[metric].higher_is_better else -1.0
    if math.isfinite(value) and (s.best is None or sign * value > sign * s.best):
        s.best, s.best_step = value, s.step
        _save_best(s)
        s.log.info(f"new best {metric} {value:.4f} at step {s.step}: {s.ckpt_dir / 'best.pt'}")


def _checkpoint(s: TrainState, model: nn.Module, **parts: Any) -> dict[str, Any]:
    """The checkpoint dict of :mod:`.checkpoint` for ``model``'s weights plus ``parts`` (optimizer, rng, ...)."""
    cfg = s.cfg
    return make_checkpoint(
        config=config_to_dict(cfg),
        model_name=cfg.model.name,
        model_args=cfg.model.args,
        tlc_train_size=cfg.model.tlc_train_size if cfg.model.tlc else None,
        model=model_state(model),
        step=s.step,
        best_metric=s.best,
        best_step=s.best_step,
        elapsed_s=s.elapsed,
        memory_format=s.memory_format,
        threads=torch.get_num_threads(),
        **parts,
    )


def _unhealthy(s: TrainState) -> str | None:
    """Why the current state must not become a checkpoint (None: it is healthy): non-finite weights, a non-finite
    output on a fixed probe input, or a non-finite latest validation. (Every update applied had a finite loss: a
    step with a non-finite loss is skipped and leaves the weights as they were.) Weights can stay finite while
    outputs are not (e.g. weights of 1e4 after a learning rate of 1e4), hence the probe."""
    if not weights_are_finite(s.raw):
        return "its weights are not finite"
    if not s.val_finite:
        return "its validation scores are not finite"
    with _inference_mode(s, s.raw), torch.no_grad():
        finite = bool(torch.isfinite(s.raw(s.probe)).all())
    return None if finite else "its output is not finite"


def _kept_checkpoint(s: TrainState) -> str:
    """What is on disk, said truthfully, for an error message."""
    if s.saved_step is None:
        return "No checkpoint was written before that"
    return f"The last good checkpoint, {s.ckpt_dir / 'last.pt'} (step {s.saved_step}), was kept"


def _what_next(s: TrainState) -> str:
    if s.saved_step is None:
        return "start over with --overwrite (there is nothing to resume)"
    return f"resume with `{resume_command(s.run_dir)} train.lr=...` or start over with --overwrite"


def _save_last(s: TrainState) -> None:
    """Write checkpoints/last.pt, the full training state, from rank 0, if the state is healthy (see
    :func:`_unhealthy`). Every process must call it (the random states are gathered from all of them, and the
    health checks give the same answer everywhere, so all raise together); it ends with a barrier."""
    reason = _unhealthy(s)
    if reason is not None:
        raise TrainingDivergedError(
            f"Training diverged: at step {s.step} the model is unhealthy ({reason}), so it was not saved. "
            f"{_kept_checkpoint(s)}. Lower train.lr or set train.grad_clip (e.g. 0.01), then {_what_next(s)}."
        )
    with _paused(s):
        rngs = du.all_gather_objects(rng_state())
        if s.info.is_main:
            rng = {**rngs[0], "ranks": rngs} if len(rngs) > 1 else rngs[0]
            ckpt = _checkpoint(
                s,
                s.raw,
                weights="raw",
                ema=model_state(s.ema.module) if s.ema is not None else None,
                optimizer=s.optimizer.state_dict(),
                scheduler=s.scheduler.state_dict(),
                scaler=s.scaler.state_dict(),
                rng=rng,
                data_order=s.batches.order_settings,
            )
            save_checkpoint(ckpt, s.ckpt_dir / "last.pt")
        du.barrier()
    s.saved_step = s.step


def _save_best(s: TrainState) -> None:
    """Write checkpoints/best.pt, the weights validation scored (the EMA when on), from rank 0; ends with a barrier."""
    with _paused(s):
        if s.info.is_main:
            ckpt = _checkpoint(s, s.eval_model, weights="raw" if s.ema is None else "ema")
            save_checkpoint(ckpt, s.ckpt_dir / "best.pt")
        du.barrier()


def _interrupted(s: TrainState, signum: int) -> None:
    name = signal.Signals(signum).name
    msg = (
        f"Interrupted by {name} at step {s.step}/{s.cfg.train.iters}; saved {s.ckpt_dir / 'last.pt'}. "
        f"Resume with: {resume_command(s.run_dir)}"
    )
    s.log.info(msg)
    raise TrainingInterrupted(msg, signum=signum, run_dir=s.run_dir, step=s.step)


# ----------------------------------------------------------------------------------------------------------------
# The loop


def _loop(s: TrainState, stop: StopSignals, callbacks: Sequence[Callable[[TrainState], None]]) -> None:
    tc, vc = s.cfg.train, s.cfg.val
    _start(s)
    if s.scheduler.progress(s.step, s.elapsed) >= 1.0:
        s.log.info(f"nothing to do: the run is complete at step {s.step} (raise train.iters to extend it)")
        return
    s.model.train()
    for batch in s.batches:
        lr = s.scheduler.set_step(s.step, s.elapsed)
        out = train_step(s.model, batch, s.loss_fn, s.optimizer, s.scaler, precision=s.precision,
                         grad_clip=tc.grad_clip, device=s.device, memory_format=s.memory_format)  # fmt: skip
        s.step += 1
        s.window.add(out)
        if out["skipped"]:
            s.bad_steps += 1
            _skipped_step(s, out)  # raises after train.max_bad_steps in a row
        else:
            s.bad_steps = 0
            if s.ema is not None:
                s.ema.update(s.raw, s.step)
            s.log.progress(s.step, loss=out["loss"], lr=lr)
        if s.step % tc.log_every == 0:
            _log_window(s, out, lr)
        for callback in callbacks:
            callback(s)
        signum = _sync_stop(s, stop)
        done = s.scheduler.progress(s.step, s.elapsed) >= 1.0
        if s.step % vc.every == 0 or done:
            _validate_keeping_checkpoint(s)
        if s.step % tc.ckpt_every == 0 or done or signum:
            _save_last(s)
        if signum:
            _interrupted(s, signum)
        if done:
            break
    best = f"; best {vc.best_metric} {s.best:.4f} at step {s.best_step}" if s.best is not None else ""
    s.log.info(f"finished at step {s.step} after {s.elapsed / 60:.1f} min{best}. Run directory: {s.run_dir}")


def train(
    cfg: Config | None = None,
    *,
    resume: str | Path | None = None,
    quiet: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
    datasets: tuple[Any, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train a model as ``cfg`` describes; returns the run directory.

    Args:
        cfg: the run's config; None with ``resume`` takes the config stored in the checkpoint.
        resume: a run directory (``RUN_DIR/checkpoints/last.pt`` is used) or a checkpoint to continue from.
        quiet: no progress bar, log lines only.
        callbacks: functions called with the :class:`TrainState` after every step (tests, custom hooks).
        datasets: (train, val) datasets to use instead of ``build_datasets(cfg.data)``; val may be None.
        overwrite: a fresh run may replace the files of an earlier run in its directory (see
            :func:`.checkpoint.claim_run_dir`); without it that is an error.

    Returns:
        The run directory, holding config.yaml, checkpoints/{last,best}.pt, metrics.jsonl, train.log, curves.png
        and tensorboard/.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; ``last.pt`` was saved and ``exit_code`` is 130/143.
        TrainingDivergedError: ``train.max_bad_steps`` non-finite losses in a row; ``last.pt`` was kept.
        ConfigError, DataError, CheckpointError: a bad config, dataset or checkpoint.
    """
    if cfg is None:
        if resume is None:
            raise ConfigError("train() needs a config or a run directory / checkpoint to resume.")
        cfg = config_for_resume(resume)
    if resume is None and int(os.environ.get("RANK", "0")) == 0:
        claim_run_dir(cfg.run_dir, overwrite=overwrite)
    info, device = du.setup_distributed(cfg.run.device)
    try:
        with StopSignals() as stop:
            state = _setup(cfg, info, device, resume, quiet, datasets)
            try:
                _loop(state, stop, callbacks)
            except NafrestoreError as exc:
                if not isinstance(exc, TrainingInterrupted):
                    state.log.error(str(exc))
                raise
            finally:
                state.log.close()
    finally:
        du.teardown_distributed(info)
    return state.run_dir


__all__ = ["LogWindow", "TrainState", "TrainingDivergedError", "train"]
