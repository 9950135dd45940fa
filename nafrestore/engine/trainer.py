"""The training loop: ``train(cfg)`` builds a run from a config, trains, validates, checkpoints and resumes.

A run lives in ``cfg.run_dir`` (see :mod:`.logging` and :mod:`.checkpoint` for the files). The loop itself is
:func:`_loop`; one step is :func:`train_step`; everything else (setup, validation, checkpoints, logging) is in
helpers around it.

Resuming is exact for iteration-based runs: on the CPU with a fixed seed, a run interrupted at any step and
resumed reaches the same weights as an uninterrupted one. The checkpoint restores the model, optimizer, schedule,
gradient scaler, EMA, step, best score and every random state, and :class:`BatchStream` restores the data
position: the training loader's batches are a function of (seed, rank, epoch) only (per-sample seeds, see
:class:`nafrestore.data.TrainSampler`), so the resumed session re-creates the interrupted epoch and skips its
consumed batches by index, without loading them, whatever the number of workers. A run with
``train.time_budget_min`` schedules by elapsed time and is not reproducible across a resume.

Multi-process training: launched by ``torchrun``, each process trains on its shard of every batch (``batch_size``
is per process), rank 0 alone logs and writes files; all processes agree at every step on non-finite losses, stop
requests (signals, time budget) and the clock, so they always leave the loop at the same step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import Config, config_from_dict, config_to_dict, dump_config, load_config, parse_override
from ..errors import ConfigError, NafrestoreError
from ..utils.device import autocast, resolve_amp, seed_everything
from . import distributed as du
from .checkpoint import (
    load_checkpoint,
    load_model_state,
    make_checkpoint,
    model_state,
    resolve_resume_path,
    rng_state,
    run_dir_of,
    save_checkpoint,
    set_rng_state,
    weights_are_finite,
)
from .ema import ModelEMA
from .logging import RunLogger, read_metrics
from .losses import build_loss
from .optim import WarmupCosineSchedule, build_optimizer
from .validation import evaluate

# ----------------------------------------------------------------------------------------------------------------
# Errors


class TrainingDivergedError(NafrestoreError):
    """``train.max_bad_steps`` non-finite losses in a row: the run stopped, its last good checkpoint kept."""


class TrainingInterrupted(NafrestoreError):
    """SIGINT or SIGTERM stopped the run at a step boundary after saving ``last.pt``.

    Attributes:
        exit_code: 130 for SIGINT, 143 for SIGTERM (128 + the signal number, the shell convention).
        run_dir: the run directory; ``resume_command`` resumes it.
        step: the step saved.
    """

    def __init__(self, message: str, *, signum: int, run_dir: Path, step: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)
        self.run_dir = run_dir
        self.step = step
        self.resume_command = resume_command(run_dir)


def resume_command(run_dir: Path) -> str:
    """The shell command that resumes the run in ``run_dir``."""
    return f"nafrestore train --resume {run_dir}"


# ----------------------------------------------------------------------------------------------------------------
# Config for --resume


def config_for_resume(
    resume: str | Path | None, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The config of a run to start or resume.

    Args:
        resume: a run directory or checkpoint to resume (None: a fresh run).
        config: a YAML config; when None (resume only), the config stored in the checkpoint is used.
        overrides: dotted ``key=value`` overrides applied on top (e.g. ``train.iters=20000`` to extend a run).

    Returns:
        The validated config. When resuming a checkpoint inside ``RUN_DIR/checkpoints/``, ``run.dir`` is set to
        RUN_DIR (unless overridden) so the run continues in its own directory.

    Raises:
        ConfigError: neither a config nor a checkpoint, or an invalid override.
        CheckpointError: the checkpoint cannot be read.
    """
    overrides = list(overrides)
    if resume is None:
        if config is None:
            raise ConfigError("Give a config file (e.g. configs/lka-nafnet-w12.yaml) or a run directory to resume.")
        return load_config(config, overrides)
    ckpt_path = resolve_resume_path(resume)
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        raw = copy.deepcopy(load_checkpoint(ckpt_path)["config"])
        for item in overrides:
            key, value = parse_override(item)
            node = raw
            for part in key.split(".")[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"Override {item!r}: {part!r} is not a section.")
            node[key.split(".")[-1]] = value
        cfg = config_from_dict(raw, source=f"{ckpt_path} (stored config)")
    run_dir = run_dir_of(ckpt_path)
    if run_dir is not None and not any(o.startswith("run.dir=") for o in overrides):
        cfg.run.dir = str(run_dir)
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# Data position


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    for obj in (loader.sampler, getattr(loader.batch_sampler, "sampler", None), loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _partial_epoch(loader: DataLoader, skip: int) -> DataLoader:
    """A one-off loader over the current epoch's batches after the first ``skip`` (call after ``_set_epoch``).

    The epoch's index batches are drawn from the loader's own batch sampler (indices carry their per-sample seeds),
    so the batches are the ones the uninterrupted run got, but the skipped ones are never loaded.
    """
    batches = list(loader.batch_sampler)[skip:]
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,  # type: ignore[arg-type]  # any sized iterable of index lists works
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        timeout=loader.timeout,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        prefetch_factor=loader.prefetch_factor if workers else None,
    )


class BatchStream:
    """Endless training batches from a DataLoader, starting at a given step.

    Step s is batch ``s % len(loader)`` of epoch ``s // len(loader)``; before each epoch the sampler (and the
    dataset, if it has one) get ``set_epoch(epoch)``. With a sampler whose order and per-sample randomness depend
    only on (seed, rank, epoch), as :func:`nafrestore.data.build_train_loader`'s, the batches are then a function of
    the step alone: a stream started at step s yields what an uninterrupted one yields from there.

    Args:
        loader: a map-style DataLoader with a batch sampler (``batch_size`` set).
        start_step: batches already consumed (the resumed step).
    """

    def __init__(self, loader: DataLoader, start_step: int = 0) -> None:
        if loader.batch_sampler is None:
            raise ValueError("BatchStream needs a DataLoader with a batch sampler (batch_size set)")
        self.loader = loader
        self.per_epoch = len(loader)
        if self.per_epoch == 0:
            raise ValueError("the training loader yields no batches")
        self.position = int(start_step)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, skip = divmod(self.position, self.per_epoch)
        while True:
            _set_epoch(self.loader, epoch)
            source = _partial_epoch(self.loader, skip) if skip else self.loader
            for batch in source:
                self.position += 1
                yield batch
            epoch, skip = epoch + 1, 0


# ----------------------------------------------------------------------------------------------------------------
# One step


def _grad_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def train_step(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    amp: str = "none",
    grad_clip: float | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """One optimisation step on one batch.

    Forward under autocast (``amp``), loss in float32, backward through the scaler (fp16), optional clipping of the
    global gradient norm, optimizer step. A non-finite loss (on any process) skips the step: no backward, no update,
    gradients cleared. Without fp16, a non-finite gradient norm (only known when clipping) is skipped the same way;
    with fp16 the scaler handles overflowing gradients itself (skips and lowers its scale), which is not an error.

    Args:
        model: the training model (possibly DDP-wrapped / compiled), in train mode.
        batch: ``{"lq": (B, 3, P, P), "gt": (B, 3, P, P)}`` float in [0, 1].
        loss_fn: (pred, target) -> scalar.
        optimizer, scaler: the optimizer and a ``torch.amp.GradScaler`` (disabled unless fp16).
        amp: ``none`` | ``bf16`` | ``fp16``.
        grad_clip: max global gradient norm, or None.
        device: where the model is.

    Returns:
        ``{"loss": float (mean over processes; nan when skipped), "skipped": bool, "grad_norm": float | None}``.
    """
    device = torch.device(device)
    lq = batch["lq"].to(device, non_blocking=True)
    gt = batch["gt"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        pred = model(lq)
    loss = loss_fn(pred.float(), gt.float())
    # One reduction tells every process the mean loss and whether any process's loss is non-finite, so that
    # all of them skip together (a process skipping backward alone would hang DDP's gradient all-reduce).
    value = loss.detach().float()
    finite = torch.isfinite(value)
    stats = torch.stack([torch.where(finite, value, torch.zeros_like(value)), (~finite).float()])
    loss_sum, n_bad = du.all_reduce_sum(stats).tolist()
    if n_bad > 0:
        optimizer.zero_grad(set_to_none=True)
        return {"loss": math.nan, "skipped": True, "grad_norm": None}
    scaler.scale(loss).backward()
    grad_norm = None
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        # After DDP's all-reduce the gradients, hence the norm, are the same on every process.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(_grad_params(optimizer), grad_clip))
        if not math.isfinite(grad_norm) and not scaler.is_enabled():
            optimizer.zero_grad(set_to_none=True)
            return {"loss": loss_sum / du.get_world_size(), "skipped": True, "grad_norm": grad_norm}
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss_sum / du.get_world_size(), "skipped": False, "grad_norm": grad_norm}


# ----------------------------------------------------------------------------------------------------------------
# Signals


class StopSignals:
    """While active, SIGINT and SIGTERM request a stop at the next step boundary instead of killing the run.

    Installed only from the main thread of the process that enters it (Python allows handlers nowhere else) and
    restored on exit. A second signal raises KeyboardInterrupt at once. Forked children (DataLoader workers)
    inherit the handler but ignore the signal: the main process shuts them down.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not logging or print: both may hold locks that a signal handler must not wait for.
        name = signal.Signals(signum).name
        os.write(2, f"\n{name} received: stopping after this step and saving last.pt (again to abort now)\n".encode())

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


# ----------------------------------------------------------------------------------------------------------------
# Run state and setup


@dataclass
class TrainState:
    """Everything a training session holds. ``model`` is what forward/backward go through (DDP- and/or
    compile-wrapped), ``raw`` the plain module inside it."""

    cfg: Config
    info: du.DistInfo
    device: torch.device
    amp: str
    run_dir: Path
    model: nn.Module
    raw: nn.Module
    ema: ModelEMA | None
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosineSchedule
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    batches: BatchStream
    val_loader: DataLoader | None
    log: RunLogger
    step: int = 0
    best: float | None = None
    best_step: int | None = None
    elapsed: float = 0.0  # training wall-clock seconds, all sessions (rank 0's clock, shared by every rank)
    bad_steps: int = 0
    suite: Any = None
    input_logged: bool = False
    window: dict[str, float] = field(default_factory=dict)
    _clock0: float = 0.0  # monotonic time at which ``elapsed`` was last synchronised
    _elapsed0: float = 0.0

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and best.pt stores: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.raw

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def _build_model(cfg: Config) -> nn.Module:
    from ..models import create_model

    try:
        return create_model(cfg.model.name, **cfg.model.args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {cfg.model.name!r} cannot be built with {cfg.model.args}: {exc}") from None


def _setup(
    cfg: Config, info: du.DistInfo, device: torch.device, resume: str | Path | None, quiet: bool, datasets: Any
) -> TrainState:
    """Build model, optimizer, schedule, data and logger; restore a checkpoint when resuming."""
    tc = cfg.train
    ckpt = load_checkpoint(resolve_resume_path(resume)) if resume is not None else None
    seed_everything(cfg.run.seed)
    raw = _build_model(cfg).to(device)  # identical on every process (and DDP broadcasts rank 0's weights anyway)
    if info.rank:
        seed_everything(cfg.run.seed + 1_000_003 * info.rank)  # independent stochastic layers per process
    if ckpt is not None:
        load_model_state(raw, ckpt["model"], f"checkpoint {resume}")
    ema = ModelEMA(raw, tc.ema) if tc.ema else None
    if ema is not None and ckpt is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    if ema is not None and cfg.model.tlc:
        ema.module.set_tlc(cfg.model.tlc_train_size)  # the EMA copy only ever runs inference
    optimizer = build_optimizer(raw, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    budget = tc.time_budget_min * 60.0 if tc.time_budget_min else None
    scheduler = WarmupCosineSchedule(
        optimizer, total_iters=tc.iters, warmup_iters=tc.warmup_iters, min_lr=tc.min_lr, time_budget_s=budget
    )
    amp = resolve_amp(tc.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    step = 0
    if ckpt is not None:
        _restore_training_state(ckpt, optimizer, scheduler, scaler)
        step = int(ckpt["step"])
    model: nn.Module = raw
    if info.distributed:
        # Depthwise conv weights (C, 1, k, k) get gradients whose stride on the size-1 dim differs from DDP's bucket
        # views; the layouts are equivalent, so DDP's performance warning about it is a false alarm.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        model = torch.compile(model)  # type: ignore[assignment]

    train_ds, val_ds = datasets if datasets is not None else _build_datasets(cfg)
    from ..data import build_train_loader, build_val_loader

    loader = build_train_loader(
        train_ds,
        batch_size=tc.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.run.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    val_loader = build_val_loader(val_ds, rank=info.rank, world_size=info.world_size) if val_ds is not None else None
    run_dir = cfg.run_dir
    log = RunLogger(
        run_dir,
        enabled=info.is_main,
        quiet=quiet,
        total_steps=tc.iters,
        start_step=step,
        curve_metric="psnr" if "psnr" in cfg.val.metrics else cfg.val.best_metric,
    )
    state = TrainState(
        cfg=cfg,
        info=info,
        device=device,
        amp=amp,
        run_dir=run_dir,
        model=model,
        raw=raw,
        ema=ema,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        loss_fn=build_loss([(t.name, t.weight) for t in tc.loss]).to(device),
        batches=BatchStream(loader, start_step=step),
        val_loader=val_loader,
        log=log,
        step=step,
    )
    if val_loader is not None:
        from ..metrics import MetricSuite

        state.suite = MetricSuite(
            cfg.val.metrics, y_channel=cfg.val.y_channel, crop_border=cfg.val.crop_border, device=device
        )
    if ckpt is not None:
        state.best, state.best_step = ckpt.get("best_metric"), ckpt.get("best_step")
        state.elapsed = state._elapsed0 = float(ckpt.get("elapsed_s", 0.0))
        # The input scores are logged once per run, not once per session.
        state.input_logged = any(
            "val/input/psnr" in r and r.get("step", 0) <= step for r in read_metrics(run_dir / "metrics.jsonl")
        )
        rng = ckpt.get("rng")
        if rng:
            # Last, so that nothing above (data, metric setup) shifts the restored streams.
            ranks = rng.get("ranks")
            set_rng_state(ranks[info.rank] if ranks and len(ranks) == info.world_size else rng)
    state._clock0 = time.monotonic()
    return state


def _build_datasets(cfg: Config) -> tuple[Any, Any]:
    from ..data import build_datasets

    return build_datasets(cfg.data, seed=cfg.run.seed)


def _restore_training_state(
    ckpt: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosineSchedule,
    scaler: torch.amp.GradScaler,
) -> None:
    if ckpt.get("optimizer") is None:
        raise ConfigError(
            "This checkpoint has no optimizer state (best.pt is for inference): resume from checkpoints/last.pt "
            "or the run directory."
        )
    # The optimizer state dict also carries hyperparameters; the config's (possibly overridden) ones win.
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, hparams in zip(optimizer.param_groups, fresh, strict=True):
        group.update(hparams)
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])


# ----------------------------------------------------------------------------------------------------------------
# Helpers of the loop


def _account(s: TrainState, out: Mapping[str, Any], lr: float) -> None:
    """After a step: the non-finite streak, the EMA, the periodic log record and the progress bar."""
    tc, w = s.cfg.train, s.window
    if out["skipped"]:
        s.bad_steps += 1
        w["skipped"] = w.get("skipped", 0) + 1
        s.log.warning(
            f"step {s.step}: non-finite loss or gradients ({out['loss']}); step skipped "
            f"({s.bad_steps} in a row, the run stops at {tc.max_bad_steps})"
        )
        if s.bad_steps >= tc.max_bad_steps:
            last = s.ckpt_dir / "last.pt"
            raise TrainingDivergedError(
                f"Training diverged: {s.bad_steps} non-finite losses in a row (steps {s.step - s.bad_steps + 1} to "
                f"{s.step}). The last good checkpoint, {last}, was kept. Lower train.lr, set train.grad_clip "
                f"(e.g. 0.01) or use train.amp=none, then resume with `{resume_command(s.run_dir)}` or start over."
            )
    else:
        s.bad_steps = 0
        if s.ema is not None:
            s.ema.update(s.raw, s.step)
        w["loss_sum"] = w.get("loss_sum", 0.0) + out["loss"]
        w["n"] = w.get("n", 0) + 1
        s.log.progress(s.step, loss=out["loss"], lr=lr)
    if s.step % tc.log_every == 0:
        now = time.monotonic()
        steps = s.step - w.get("step0", s.step - tc.log_every)
        # Iterations per second of training proper: validation and checkpoint time left out.
        it_s = steps / max(now - w.get("t0", s._clock0) - w.get("paused", 0.0), 1e-9)
        loss = w["loss_sum"] / w["n"] if w.get("n") else math.nan
        rec = {"loss": loss, "lr": lr, "it_s": it_s, "epoch": s.step // s.batches.per_epoch}
        if out.get("grad_norm") is not None:
            rec["grad_norm"] = out["grad_norm"]
        if w.get("skipped"):
            rec["skipped"] = int(w["skipped"])
        s.log.record(s.step, rec)
        s.log.info(f"step {s.step}/{tc.iters}  loss {loss:.4f}  lr {lr:.3e}  {it_s:.2f} it/s")
        s.window = {"t0": now, "step0": s.step}


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
def _inference_mode(s: TrainState, model: nn.Module) -> Iterator[None]:
    """Validation conditions: TLC on when configured (training model only during the pass), RNG untouched."""
    rng = rng_state()  # a validation must not shift the training randomness (resume would then differ)
    toggle = s.cfg.model.tlc and model is s.raw
    if toggle:
        s.raw.set_tlc(s.cfg.model.tlc_train_size)
    try:
        yield
    finally:
        if toggle:
            s.raw.set_tlc(None)
        set_rng_state(rng)


def _validate(s: TrainState) -> None:
    """Score the validation set, record it, keep best.pt, redraw curves.png."""
    if s.val_loader is None:
        return
    vc, model = s.cfg.val, s.eval_model
    t0 = time.monotonic()
    with _inference_mode(s, model):
        res = evaluate(
            model,
            s.val_loader,
            metrics=vc.metrics,
            device=s.device,
            tile=vc.tile,
            overlap=vc.overlap,
            y_channel=vc.y_channel,
            crop_border=vc.crop_border,
            amp="none",  # scores in full precision, whatever the training precision
            include_input=not s.input_logged,
            suite=s.suite,
        )
    s.window["paused"] = s.window.get("paused", 0.0) + time.monotonic() - t0
    s.log.record(s.step, {f"val/{k}": v for k, v in res.items()})
    shown = "  ".join(f"{k} {v:.4f}" for k, v in res.items() if k != "n_images" and not k.startswith("input/"))
    s.log.info(f"validation at step {s.step} ({int(res['n_images'])} images, {'EMA' if s.ema else 'raw'}): {shown}")
    if not s.input_logged and "input/psnr" in res and "psnr" in res:
        gain = res["psnr"] - res["input/psnr"]
        s.log.info(f"degraded input PSNR {res['input/psnr']:.2f} dB -> restored {res['psnr']:.2f} dB ({gain:+.2f} dB)")
    s.input_logged = True
    value = res.get(vc.best_metric, math.nan)
    if math.isfinite(value) and (s.best is None or value > s.best):
        s.best, s.best_step = value, s.step
        _save(s, "best")
        s.log.info(f"new best {vc.best_metric} {value:.4f} at step {s.step}: {s.ckpt_dir / 'best.pt'}")
    s.log.plot_curves()


def _save(s: TrainState, which: str) -> None:
    """Write checkpoints/last.pt (full training state) or best.pt (the validated weights) from rank 0.

    Every process must call it (the random states are gathered from all of them); it ends with a barrier.
    """
    t0 = time.monotonic()
    # Checked on every process (the weights are the same everywhere), so that all of them raise together.
    if which == "last" and not weights_are_finite(s.raw):
        raise TrainingDivergedError(
            f"The weights became non-finite at step {s.step}; {s.ckpt_dir / 'last.pt'} was not overwritten. "
            "Lower train.lr or set train.grad_clip."
        )
    rngs = du.all_gather_objects(rng_state()) if which == "last" else []
    if s.info.is_main:
        rng = None
        if rngs:
            rng = dict(rngs[0])
            if len(rngs) > 1:
                rng["ranks"] = rngs
        cfg = s.cfg
        last = which == "last"
        ckpt = make_checkpoint(
            config=config_to_dict(cfg),
            model_name=cfg.model.name,
            model_args=cfg.model.args,
            tlc_train_size=cfg.model.tlc_train_size if cfg.model.tlc else None,
            model=model_state(s.raw if last else s.eval_model),
            weights="raw" if last or s.ema is None else "ema",
            ema=model_state(s.ema.module) if last and s.ema is not None else None,
            optimizer=s.optimizer.state_dict() if last else None,
            scheduler=s.scheduler.state_dict() if last else None,
            scaler=s.scaler.state_dict() if last else None,
            step=s.step,
            best_metric=s.best,
            best_step=s.best_step,
            elapsed_s=s.elapsed,
            rng=rng,
        )
        save_checkpoint(ckpt, s.ckpt_dir / f"{which}.pt")
    du.barrier()
    s.window["paused"] = s.window.get("paused", 0.0) + time.monotonic() - t0


def _interrupted(s: TrainState, signum: int) -> None:
    name = signal.Signals(signum).name
    msg = (
        f"Interrupted by {name} at step {s.step}/{s.cfg.train.iters}; saved {s.ckpt_dir / 'last.pt'}. "
        f"Resume with: {resume_command(s.run_dir)}"
    )
    s.log.info(msg)
    raise TrainingInterrupted(msg, signum=signum, run_dir=s.run_dir, step=s.step)


def _start(s: TrainState) -> None:
    """Write config.yaml and the opening log lines (rank 0)."""
    if s.info.is_main:
        s.run_dir.mkdir(parents=True, exist_ok=True)
        (s.run_dir / "config.yaml").write_text(dump_config(s.cfg), encoding="utf-8")
    n_params = sum(p.numel() for p in s.raw.parameters())
    tc = s.cfg.train
    what = f"resuming at step {s.step}" if s.step else "starting"
    world = f", {s.info.world_size} processes x batch {tc.batch_size}" if s.info.distributed else ""
    s.log.info(
        f"{what}: {s.cfg.model.name} ({n_params / 1e6:.3f} M parameters) on {s.device}, amp {s.amp}{world}, "
        f"{tc.iters} iterations"
        + (f" or {tc.time_budget_min:g} min" if tc.time_budget_min else "")
        + f"; run directory {s.run_dir}"
    )
    s.window = {"t0": time.monotonic(), "step0": s.step}


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
        out = train_step(
            s.model, batch, s.loss_fn, s.optimizer, s.scaler, amp=s.amp, grad_clip=tc.grad_clip, device=s.device
        )
        s.step += 1
        _account(s, out, lr)
        for callback in callbacks:
            callback(s)
        signum = _sync_stop(s, stop)
        done = s.scheduler.progress(s.step, s.elapsed) >= 1.0
        if s.step % vc.every == 0 or done:
            _validate(s)
        if s.step % tc.ckpt_every == 0 or done or signum:
            _save(s, "last")
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
) -> Path:
    """Train a model as ``cfg`` describes; returns the run directory.

    Args:
        cfg: the run's config; None with ``resume`` takes the config stored in the checkpoint.
        resume: a run directory (``RUN_DIR/checkpoints/last.pt`` is used) or a checkpoint to continue from.
        quiet: no progress bar, log lines only.
        callbacks: functions called with the :class:`TrainState` after every step (tests, custom hooks).
        datasets: (train, val) datasets to use instead of ``build_datasets(cfg.data)``; val may be None.

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


__all__ = [
    "BatchStream",
    "StopSignals",
    "TrainState",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "config_for_resume",
    "resume_command",
    "train",
    "train_step",
]
