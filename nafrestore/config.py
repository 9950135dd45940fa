"""Typed configuration: YAML files and dotted overrides become nested dataclasses, validated once here.

A config file mirrors the dataclasses one-to-one (sections ``model``, ``data``, ``train``, ``val``, ``run``).
``load_config(path, overrides)`` reads it with ``yaml.safe_load``, applies ``key=value`` overrides (each value
parsed as YAML, never evaluated), rejects unknown keys with a "did you mean", checks types and ranges, and
returns a :class:`Config`. Every problem raises :class:`~nafrestore.errors.ConfigError` naming the key, the file
and, where known, the line. Below this module, components take plain arguments, not config objects.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import difflib
import inspect
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .registry import did_you_mean


def _field(default: Any, help: str) -> Any:
    """A dataclass field with its documentation (read by the README's config reference)."""
    if callable(default):
        return field(default_factory=default, metadata={"help": help})
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """The network. ``name`` picks it from the model registry; every other key in the YAML section is passed
    to that model as a keyword argument (see ``nafrestore info``) and is kept in ``args``."""

    name: str = _field("lka_nafnet", "Registered model name: `nafnet` or `lka_nafnet`.")
    tlc: bool = _field(
        False,
        "Test-time local converter: at inference, channel attention pools over a window "
        "1.5x the training feature size instead of the whole image (NAFNet's TLC).",
    )
    tlc_train_size: int = _field(256, "Training patch size that TLC's window is derived from.")
    init_from: str | None = _field(
        None,
        "Fine-tune: weights loaded into the new network before training (strictly: every key and shape must fit): "
        "a pretrained model's name (`nafrestore models`; downloaded once), a checkpoint or weights file, or a run "
        "directory (its best.pt). Not used when resuming. A relative path is stored absolute.",
    )
    args: dict[str, Any] = _field(
        {},
        "Model keyword arguments (written in the YAML as siblings of `name`), checked against the model's "
        "signature: e.g. `width`, `enc_blocks`, and for `lka_nafnet` `attention` (`lka` or `lska`) and "
        "`kernel_size` (the equivalent large kernel of either attention: 7, 11, 23, 35, 41, 53 or 65; default 23); "
        "for both models `residual_highpass` (a Gaussian sigma in pixels: the network then changes only structure "
        "finer than that, keeping the input's coarse colour and brightness; default null, off) and "
        "`residual_highpass_gate` ([low, high] noise levels, 0-255: the coarse part is let back in per image as the "
        "input's estimated noise rises from low to high, so strong coarse noise can go; default null, fixed) and "
        "`residual_highpass_luma` (a larger sigma for the luma of the residual, `residual_highpass` then filtering "
        "its chroma only: coarse luma noise can go, colours of large areas stay; default null, one sigma) and "
        "`residual_highpass_flat` ([wide sigma, gradient energy]: where the input is flat, its local gradient "
        "energy below that many levels squared, the high-pass widens to the wide sigma, so coarser noise can go "
        "there while texture gets only the finest changes; default null, the same sigma everywhere) and "
        "`residual_nonlocal_means` ([flat, texture] strengths in [0, 1], needs `residual_highpass_flat`: the output "
        "moves that far towards non-local means of the input guided by the output, for mild noise; default null) and "
        "`residual_highpass_gate_estimate` (the noise estimate the gate reads: `wavelet`, the default, or "
        "`quiet_blocks`, read on the image's quietest blocks so that texture is not taken for noise) and "
        "`residual_highpass_coarse` (a sigma above `residual_highpass`, needs `residual_highpass_gate`: the gate "
        "opens up to that sigma only, so no noise level lets the network move the colour of larger areas; default "
        "null, fully); a `noise_gated_pair` takes `gate_estimate` likewise, and `texture_fade` ([low, high, "
        "floor]: its mild network's correction is scaled from 1 at wavelet noise level low down to floor at high, "
        "so that texture read as noise keeps its grain; default null).",
    )

    def __post_init__(self) -> None:
        # A path (not a registry name) is taken from the working directory now, like the data paths.
        if self.init_from is not None:
            from .models.pretrained import find_pretrained

            if not self.init_from.strip():
                raise ConfigError("model.init_from is empty: give a pretrained model's name or a weights file.")
            if find_pretrained(self.init_from) is None or os.path.exists(self.init_from):
                self.init_from = os.path.abspath(os.path.expanduser(self.init_from))


@dataclass
class DataConfig:
    """Where the images come from and how training samples are cut."""

    format: Literal["sample", "folder", "synthetic", "frames", "sidd", "gopro", "shards"] = _field(
        "sample",
        "Dataset layout: `sample` (photographs shipped with scikit-image, degraded on the fly), `folder` (paired "
        "lq/gt folders), `synthetic` (clean folders degraded on the fly), `frames` (folders of consecutive sharp "
        "video frames, averaged into blurry/sharp pairs as GoPro was made), `sidd` (SIDD-Medium sRGB), `gopro`, "
        "`shards` (tar shards written by `nafrestore prepare`, streamed).",
    )
    root: str | None = _field(
        None,
        "Dataset root for `sidd` and `gopro`. Relative data paths (this and the folders below) are taken from the "
        "working directory when the config is read and stored absolute in the run's config.yaml.",
    )
    train_lq: str | None = _field(None, "`folder`: degraded training images.")
    train_gt: str | None = _field(None, "`folder`: ground-truth training images (matched by relative path/stem).")
    val_lq: str | None = _field(None, "`folder`: degraded validation images.")
    val_gt: str | None = _field(None, "`folder`: ground-truth validation images.")
    train_dir: str | None = _field(
        None,
        "`synthetic`: folder of clean training images. `frames`: folder of training sequences, each a folder of "
        "one video's consecutive sharp frames in file-name order (clip1/000001.png, ...).",
    )
    val_dir: str | None = _field(None, "`synthetic`: folder of clean validation images. `frames`: of sequences.")
    frames: tuple[int, int] = _field(
        (7, 13),
        "`frames`: the range [lo, hi] of the number K of consecutive frames averaged (in linear light, gamma 2.2) "
        "into one blurry input, drawn per sample; the middle frame (frame K // 2) is the target. GoPro used 7-13 "
        "frames of 240 fps video; scale K with the frame rate. Validation cuts each sequence into windows of hi "
        "frames, K fixed per window.",
    )
    shards: str | None = _field(
        None,
        "`shards`: the folder `nafrestore prepare` wrote (index.json and the .tar shards); every node needs it at "
        "this path. Shards of clean images (`prepare synthetic`) are degraded by `data.degradations`.",
    )
    shuffle_buffer: int = _field(
        256,
        "`shards`: samples each loader stream shuffles among (held as PNG bytes: about 1 MB per 512 px SIDD pair).",
    )
    degradations: list[dict[str, Any]] = _field(
        [{"type": "gaussian_noise", "sigma": 25}],
        "`sample`/`synthetic`/`frames` (after averaging): degradation pipeline applied in order; each item has a "
        "`type` (gaussian_noise, poisson_gaussian_noise, camera_noise, camera_shake, motion_blur, gaussian_blur, "
        "defocus_blur, jpeg, one_of) and its parameters, plus an optional `p`, the probability of applying it. "
        "`one_of` picks one nested pipeline per sample: "
        "`{type: one_of, weights: [0.7, 0.3], pipelines: [[...], [...]]}` (`[]` for none, `shuffle: true` for a "
        "random step order). Random per training sample, fixed per validation image "
        "(seeded by its name).",
    )
    target_degradations: list[dict[str, Any]] = _field(
        [],
        "`sample`/`synthetic`/`shards` of clean images: a pipeline (the steps of `degradations`) applied to each "
        "clean image first; its output is the target, and what `degradations` degrades into the input. E.g. "
        "`[{type: jpeg, quality: [75, 97], p: 0.9}]`: JPEG-compressed targets, so that the model keeps the "
        "compression texture of clean camera JPEGs instead of removing it as noise. Random per training sample, "
        "fixed per validation image. Empty: the clean image is the target.",
    )
    patch_size: int = _field(256, "Side of the random square training crops (smaller images are reflect-padded).")
    flip: bool = _field(True, "Random horizontal/vertical flips during training.")
    rot90: bool = _field(True, "Random 90-degree rotations during training (with flips: the 8 dihedral variants).")
    cache: Literal["auto", "always", "never"] = _field(
        "auto", "Keep decoded images in memory: `auto` does so for datasets under about 2 GB."
    )
    num_workers: int = _field(2, "DataLoader worker processes per rank (0 loads in the main process).")
    val_max_images: int | None = _field(None, "Validate on at most this many images (all when null).")

    def __post_init__(self) -> None:
        # Relative data paths are taken from the working directory now, once, and kept absolute: the run's
        # config.yaml then works for `eval RUN` and `train --resume RUN` from any directory.
        for key in ("root", "train_lq", "train_gt", "val_lq", "val_gt", "train_dir", "val_dir", "shards"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, os.path.abspath(os.path.expanduser(value)))
        _check_range("data.patch_size", self.patch_size, low=8)
        _check_range("data.num_workers", self.num_workers, low=0)
        _check_range("data.shuffle_buffer", self.shuffle_buffer, low=1)
        if not 1 <= self.frames[0] <= self.frames[1]:
            raise ConfigError(f"data.frames must be a range [lo, hi] with 1 <= lo <= hi; got {list(self.frames)}.")
        if self.val_max_images is not None:
            _check_range("data.val_max_images", self.val_max_images, low=1)
        needs = {
            "folder": ("train_lq", "train_gt", "val_lq", "val_gt"),
            "synthetic": ("train_dir", "val_dir"),
            "frames": ("train_dir", "val_dir"),
            "sidd": ("root",),
            "gopro": ("root",),
            "shards": ("shards",),
        }.get(self.format, ())
        missing = [k for k in needs if getattr(self, k) is None]
        if missing:
            raise ConfigError(
                f"data.format is {self.format!r}, which needs data.{missing[0]} to be set "
                f"(missing: {', '.join('data.' + k for k in missing)})."
            )
        if self.target_degradations and self.format not in ("sample", "synthetic", "shards"):
            raise ConfigError(
                f"data.target_degradations applies to clean images (data.format sample, synthetic or shards), but "
                f"data.format is {self.format!r}, whose targets are given. Remove data.target_degradations."
            )
        for key in ("degradations", "target_degradations"):
            _check_pipeline(f"data.{key}", getattr(self, key))


@dataclass
class LossTerm:
    """One term of the training loss."""

    name: str = _field("psnr", "Loss name: `psnr`, `l1`, `charbonnier` or `mse` (the registry in losses.py).")
    weight: float = _field(1.0, "Weight of this term in the sum.")

    def __post_init__(self) -> None:
        from .losses import LOSSES  # late import: the losses pull in torch

        _check_registered("train.loss name", self.name, LOSSES)


@dataclass
class TrainConfig:
    """Optimisation: AdamW with linear warm-up then cosine decay to a floor, counted in iterations."""

    iters: int = _field(1000, "Training iterations (optimizer steps).")
    batch_size: int = _field(8, "Images per step per process.")
    lr: float = _field(1e-3, "Peak learning rate of AdamW.")
    betas: tuple[float, float] = _field((0.9, 0.9), "AdamW betas.")
    weight_decay: float = _field(0.0, "AdamW weight decay (never applied to biases, norms, scales).")
    warmup_iters: int = _field(
        0, "Linear warm-up length in iterations (with `time_budget_min` too; there 0 means the first 2 % of the run)."
    )
    min_lr: float = _field(1e-7, "Floor that the cosine schedule decays to.")
    grad_clip: float | None = _field(None, "Clip the global gradient norm to this value (null: off).")
    loss: list[LossTerm] = _field(lambda: [LossTerm()], "Weighted sum of loss terms.")
    precision: Literal["fp32", "bf16", "fp16"] = _field(
        "fp32", "Training precision: fp32, or autocast to bf16 or fp16 (fp16 adds a gradient scaler; GPU only)."
    )
    memory_format: Literal["auto", "contiguous", "channels_last"] = _field(
        "auto",
        "Memory format of the model and its training batches; auto is channels_last on the CPU and on CUDA under "
        "bf16/fp16, else contiguous (a fixed rule, never a timing, so a seeded run's weights do not depend on the "
        "machine's load; a resumed run keeps its checkpoint's choice). Results differ by float rounding only.",
    )
    ema: float | None = _field(None, "EMA decay of the weights (e.g. 0.999); validation then uses the EMA.")
    compile: bool = _field(False, "Wrap the model in torch.compile.")
    ckpt_every: int = _field(1000, "Write checkpoints/last.pt every this many iterations.")
    log_every: int = _field(50, "Log training loss and learning rate every this many iterations.")
    max_bad_steps: int = _field(10, "Stop after this many non-finite losses in a row.")
    time_budget_min: float | None = _field(
        None,
        "A wall-clock budget besides `iters`: the run's progress is whichever of steps/`iters` and minutes/"
        "`time_budget_min` is further along; the cosine schedule follows it and the run ends when either is reached "
        "(the weights then depend on the machine's speed and load; null gives the same weights for the same seed).",
    )

    def __post_init__(self) -> None:
        _check_range("train.iters", self.iters, low=1)
        _check_range("train.batch_size", self.batch_size, low=1)
        _check_range("train.lr", self.lr, low=0, strict=True)
        _check_range("train.weight_decay", self.weight_decay, low=0)
        _check_range("train.warmup_iters", self.warmup_iters, low=0)
        _check_range("train.min_lr", self.min_lr, low=0)
        _check_range("train.ckpt_every", self.ckpt_every, low=1)
        _check_range("train.log_every", self.log_every, low=1)
        _check_range("train.max_bad_steps", self.max_bad_steps, low=1)
        for i, beta in enumerate(self.betas):
            if not 0 <= beta < 1:
                raise ConfigError(f"train.betas[{i}] must be in [0, 1); got {beta}.")
        if self.grad_clip is not None:
            _check_range("train.grad_clip", self.grad_clip, low=0, strict=True)
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"train.ema must be a decay in (0, 1), e.g. 0.999, or null; got {self.ema}.")
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr ({self.min_lr}) must not exceed train.lr ({self.lr}).")
        if self.warmup_iters >= self.iters:
            raise ConfigError(f"train.warmup_iters ({self.warmup_iters}) must be below train.iters ({self.iters}).")
        if not self.loss:
            raise ConfigError("train.loss must name at least one term, e.g. [{name: psnr, weight: 1.0}].")
        if self.time_budget_min is not None:
            _check_range("train.time_budget_min", self.time_budget_min, low=0, strict=True)


@dataclass
class ValConfig:
    """Validation during training."""

    every: int = _field(1000, "Validate every this many iterations (and at the end).")
    best_metric: str = _field(
        "psnr", "Per-image metric that decides checkpoints/best.pt (its direction comes from the metric registry)."
    )
    metrics: list[str] = _field(
        ["psnr", "ssim"], "Metrics computed at validation: psnr, ssim, ms-ssim, lpips, rfid, kid."
    )
    tile: int | None = _field(None, "Validate large images in tiles of this size (null: whole images).")
    overlap: int = _field(32, "Tile overlap in pixels.")
    y_channel: bool = _field(False, "Score PSNR/SSIM on the BT.601 Y channel.")
    crop_border: int = _field(0, "Pixels cropped from each side before scoring.")

    def __post_init__(self) -> None:
        _check_range("val.every", self.every, low=1)
        _check_range("val.overlap", self.overlap, low=0)
        _check_range("val.crop_border", self.crop_border, low=0)
        if self.tile is not None:
            _check_range("val.tile", self.tile, low=16)
            if 2 * self.overlap >= self.tile:
                raise ConfigError(f"val.overlap ({self.overlap}) must be below half of val.tile ({self.tile}).")
        from .metrics.suite import METRIC_INFO, parse_metric_names  # late import: the metrics pull in torch

        try:
            self.metrics = parse_metric_names(self.metrics)
        except ConfigError as exc:
            raise ConfigError(f"val.metrics: {exc}") from None
        per_image = [m for m in self.metrics if METRIC_INFO[m].kind == "image"]
        if self.best_metric not in per_image:
            raise ConfigError(
                f"val.best_metric {self.best_metric!r} must be one of val.metrics scored per image "
                f"({', '.join(per_image) or 'none'})."
            )


@dataclass
class RunConfig:
    """Where and how a run happens."""

    name: str | None = _field(None, "Run name (default: the config file's stem).")
    dir: str | None = _field(None, "Run directory (default: runs/<name>).")
    seed: int = _field(0, "Random seed (model init, crops, degradations).")
    device: str = _field("auto", "`auto`, `cpu`, `cuda`, `cuda:N` or `mps`.")

    def __post_init__(self) -> None:
        device = self.device
        ok = device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())
        if not ok:
            raise ConfigError(f"run.device must be auto, cpu, cuda, cuda:N or mps; got {device!r}.")


@dataclass
class Config:
    """A whole run: model, data, training, validation and run settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def run_dir(self) -> Path:
        """The run directory: ``run.dir`` or ``runs/<run.name>``."""
        return Path(self.run.dir) if self.run.dir else Path("runs") / (self.run.name or "run")


def _check_registered(key: str, name: str, registry: Any) -> None:
    """A registry name, or a ConfigError naming ``key`` with the registry's did-you-mean and valid names."""
    try:
        registry.get(name)
    except KeyError as exc:
        raise ConfigError(f"{key}: {exc.args[0]}") from None


def _check_pipeline(key: str, specs: list[dict[str, Any]]) -> None:
    """A degradation pipeline's steps built once, so that bad types and parameters fail now, not mid-run."""
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(
                f"{key}[{i}] must be a mapping with a `type` key, e.g. {{type: gaussian_noise, sigma: 25}}; "
                f"got {spec!r}."
            )
    from .data.degradations import build_degradation  # late import: data pulls in OpenCV
    from .errors import DataError

    try:
        build_degradation(specs, key=key)
    except DataError as exc:
        raise ConfigError(str(exc)) from None


def _check_range(key: str, value: float, low: float, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        bound = f"> {low}" if strict else f">= {low}"
        raise ConfigError(f"{key} must be {bound}; got {value}.")


# ----------------------------------------------------------------------------------------------------------------
# Building dataclasses from plain YAML data


class _Where:
    """Finds the line of a dotted key in the YAML text, so errors can point at it."""

    def __init__(self, source: str, text: str | None) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.overrides: dict[str, str] = {}  # dotted key -> the override text that set it
        if text:
            try:
                self._walk(yaml.compose(text), "")
            except yaml.YAMLError:
                pass

    def _walk(self, node: yaml.Node | None, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                self.lines[key] = key_node.start_mark.line + 1
                self._walk(value_node, key + ".")

    def __call__(self, key: str) -> str:
        base = key.split("[")[0]
        if base in self.overrides:
            return f"override {self.overrides[base]!r}"
        line = self.lines.get(base)
        return f"{self.source}, line {line}" if line else self.source


def _type_name(tp: Any) -> str:
    """A readable name of an annotation: ``list of int``, ``float or null``, ``'none' | 'bf16'``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, collections.abc.Sequence):
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return f"list of {len(args)} {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping (" + ", ".join(f.name for f in dataclasses.fields(tp)) + ")"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# Scalar types: (accepts the YAML value, what to say otherwise). bool is an int in Python, so it is excluded by hand.
_SCALARS: dict[Any, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
}


def _coerce(value: Any, tp: Any, key: str, where: _Where) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where YAML is looser (int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{key} ({where(key)}) must be {expected}; got {value!r}.")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail("a mapping")
        return _build(tp, value, key, where)
    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, key, where, fail)
    if origin in (list, collections.abc.Sequence, tuple):
        return _coerce_sequence(value, tp, key, where, fail)
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        return dict(value)
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if not accepts(value):
            raise fail(expected)
        return float(value) if tp is float else value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


def _coerce_union(value: Any, tp: Any, key: str, where: _Where, fail: Any) -> Any:
    """The first member of ``A | B | None`` that accepts ``value`` (None only where the union allows it)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key, where)
        except ConfigError:
            continue
    raise fail(_type_name(tp))


def _coerce_sequence(value: Any, tp: Any, key: str, where: _Where, fail: Any) -> Any:
    """``list[T]`` (any length) or ``tuple[A, B]`` (fixed length), each item checked."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise fail(f"a list of {len(args)} values")
        return tuple(_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if not isinstance(value, list):
        raise fail(f"a list of {_type_name(args[0])}")
    return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]


def _unknown_key(key: str, valid: list[str], prefix: str, where: _Where) -> ConfigError:
    # Not registry.did_you_mean: the hint names the full dotted key, matched on the last part only.
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    return ConfigError(
        f"Unknown config key '{prefix}{key}' ({where(prefix + key)}).{hint} Valid keys here: {', '.join(valid)}."
    )


def _build(cls: type, raw: dict[str, Any], prefix: str, where: _Where) -> Any:
    prefix = f"{prefix}." if prefix else ""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if cls is ModelConfig:
        return _build_model(raw, where)
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown_key(str(key), names, prefix, where)
        kwargs[key] = _coerce(value, hints[key], prefix + key, where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # A range or consistency check of the section: blame the override that set the key it names, if any.
        blamed = [f"override {item!r}" for key, item in where.overrides.items() if str(exc).startswith(key + " ")]
        raise ConfigError(f"{exc} ({blamed[0] if blamed else where.source})") from None


def _build_model(raw: dict[str, Any], where: _Where) -> ModelConfig:
    """The model section: fixed keys plus the chosen model's own keyword arguments, checked by its signature."""
    from .models import MODELS  # late import: the model registry pulls in torch
    from .models.layers import check_coarse, check_flat, check_gate
    from .models.nonlocal_means import check_strengths

    raw = dict(raw)
    name = raw.pop("name", ModelConfig.name)
    if not isinstance(name, str) or name not in MODELS:
        raise ConfigError(
            f"model.name ({where('model.name')}) is {name!r}, which is not a registered model."
            f"{did_you_mean(str(name), MODELS.names())} "
            f"Valid names: {', '.join(MODELS.names())}."
        )
    fixed = {}
    for key in ("tlc", "tlc_train_size", "init_from"):
        if key in raw:
            fixed[key] = _coerce(raw.pop(key), typing.get_type_hints(ModelConfig)[key], f"model.{key}", where)
    extra = raw.pop("args", None) or {}
    raw.update(extra)
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p.name for p in inspect.signature(MODELS.get(name)).parameters.values() if p.kind in kinds]
    factory = MODELS.get(name)
    hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
    args = {}
    for key, value in raw.items():
        if key not in params:
            raise _unknown_key(str(key), ["name", "tlc", "tlc_train_size", "init_from", *params], "model.", where)
        args[key] = _coerce(value, hints.get(key, Any), f"model.{key}", where)
    cfg = ModelConfig(name=name, args=args, **fixed)
    _check_range("model.tlc_train_size", cfg.tlc_train_size, low=8)
    highpass = args.get("residual_highpass")
    if highpass is not None and not highpass > 0:
        raise ConfigError(
            f"model.residual_highpass ({where('model.residual_highpass')}) must be a Gaussian sigma in pixels > 0, "
            f"or null for no high-pass; got {highpass}."
        )
    _check_dependent(
        args, "residual_highpass_gate", "residual_highpass", lambda gate: _rejects(check_gate, gate),
        "two noise levels [low, high] on the 0-255 scale with 0 <= low < high, and needs model.residual_highpass",
        where,
    )  # fmt: skip
    _check_dependent(
        args, "residual_highpass_luma", "residual_highpass", lambda luma: not luma > 0,
        "a Gaussian sigma in pixels > 0 for the luma of the residual, and needs model.residual_highpass", where,
    )  # fmt: skip
    _check_dependent(
        args, "residual_highpass_flat", "residual_highpass", lambda flat: _rejects(check_flat, flat, highpass),
        "[wide sigma, gradient energy]: a Gaussian sigma in pixels above model.residual_highpass and an energy > 0 "
        "(levels squared, 0-255), and needs model.residual_highpass", where,
    )  # fmt: skip
    _check_dependent(
        args, "residual_highpass_coarse", "residual_highpass_gate",
        lambda coarse: _rejects(check_coarse, coarse, highpass or 0.0),
        "a Gaussian sigma in pixels above model.residual_highpass, and needs model.residual_highpass_gate (it limits "
        "how far the gate opens)", where,
    )  # fmt: skip
    _check_dependent(
        args, "residual_nonlocal_means", "residual_highpass_flat", lambda blend: _rejects(check_strengths, blend),
        "two strengths [flat, texture] in [0, 1], and needs model.residual_highpass_flat (its flatness weighs the "
        "two)", where,
    )  # fmt: skip
    return cfg


def _check_dependent(
    args: dict[str, Any], key: str, needs: str, invalid: typing.Callable[[Any], bool], must_be: str, where: _Where
) -> None:
    """Refuse ``model.<key>`` when it is set but ``model.<needs>`` is not, or when ``invalid(value)``: one
    ConfigError naming the key and its line, saying what it ``must_be``."""
    value = args.get(key)
    if value is not None and (args.get(needs) is None or invalid(value)):
        raise ConfigError(f"model.{key} ({where(f'model.{key}')}) must be {must_be}; got {value}.")


def _rejects(check: typing.Callable[..., Any], *args: Any) -> bool:
    """Whether a layer's own validity ``check`` raises ValueError on ``args`` (the config then says why, naming
    the key and its line)."""
    try:
        check(*args)
    except ValueError:
        return True
    return False


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Override {dotted!r} ({source}): {part!r} is not a section.")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as YAML (``2e-4`` -> float, ``[1, 2]`` -> list, ``null`` -> None)."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not p.isidentifier() for p in key.split(".")):
        raise ConfigError(f"Override {text!r} is not of the form section.key=value, e.g. train.lr=2e-4.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Override {text!r}: the value is not valid YAML ({exc}).") from None
    return key, _fix_yaml_floats(parsed)


def _read_yaml(path: Path) -> tuple[dict[str, Any], str]:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Give the path of a YAML file, e.g. configs/*.yaml.")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections (model, data, train, val, run).")
    return _fix_yaml_floats(raw), text


def _fix_yaml_floats(node: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-3`` as a string (it wants ``1.0e-3``); users mean a number, so strings that are
    plainly numbers in scientific notation become floats. Files and overrides both go through here."""
    if isinstance(node, dict):
        return {k: _fix_yaml_floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_yaml_floats(v) for v in node]
    if isinstance(node, str) and "e" in node.lower():
        try:
            return float(node)
        except ValueError:
            return node
    return node


def config_from_dict(
    raw: dict[str, Any], source: str = "<dict>", text: str | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Validate a plain dict (as read from YAML or stored in a checkpoint) into a :class:`Config`.

    Args:
        raw: the nested sections (not modified).
        source, text: the file name and its YAML text, for error messages with line numbers.
        overrides: ``section.key=value`` strings applied on top; errors name the override that set a key.
    """
    raw = copy.deepcopy(raw)
    where = _Where(source, text)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value, f"override {item!r}")
        where.overrides[key] = item
    return _build(Config, _migrate_renamed_keys(raw), "", where)


def _migrate_renamed_keys(raw: dict[str, Any]) -> dict[str, Any]:
    """Read configs (and checkpoints) written before ``train.amp: none|bf16|fp16`` became ``train.precision``."""
    train = raw.get("train")
    if not isinstance(train, dict) or "amp" not in train:
        return raw
    train = dict(train)
    amp = train.pop("amp")
    train.setdefault("precision", "fp32" if amp == "none" else amp)
    return {**raw, "train": train}


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config, apply dotted overrides and validate.

    Args:
        path: the YAML file (None: defaults only).
        overrides: ``section.key=value`` strings applied after the file.

    Returns:
        The validated config; ``run.name`` defaults to the file's stem.

    Raises:
        ConfigError: with a one-paragraph message naming the key and the file.
    """
    raw: dict[str, Any] = {}
    text = None
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        raw, text = _read_yaml(path)
        source = str(path)
    cfg = config_from_dict(raw, source, text, overrides)
    if cfg.run.name is None:
        cfg.run.name = Path(path).stem if path is not None else "run"
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain YAML-ready data, with model arguments written back as siblings of ``name``."""
    out = dataclasses.asdict(cfg)
    model = out.pop("model")
    args = model.pop("args")
    if model.get("init_from") is None:
        model.pop("init_from", None)  # written only when set: configs and checkpoints without it stay as they were
    return _tuples_as_lists({"model": {**model, **args}, **out})


def _tuples_as_lists(value: Any) -> Any:
    """Fixed-length fields (``train.betas``, ``data.frames``) as YAML lists, so a config read back compares equal."""
    if isinstance(value, dict):
        return {k: _tuples_as_lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tuples_as_lists(v) for v in value]
    return value


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML text (loads back to an equal config)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def config_reference_markdown() -> str:
    """A markdown table of every config key: type, default and meaning, generated from the dataclasses.

    ``scripts/config_reference.py`` writes it into the README; a test fails when the README is stale.
    """
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for section in dataclasses.fields(Config):
        cls = section.type if isinstance(section.type, type) else typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            if section.name == "train" and f.name == "loss":
                default = [dataclasses.asdict(t) for t in default]
            shown = yaml.safe_dump(default, default_flow_style=True, width=10_000, sort_keys=False)
            shown = shown.strip().removesuffix("...").strip()
            kind = _type_name(hints[f.name]).replace(" | ", " or ")
            help_text = f.metadata.get("help", "").replace("|", "/")
            rows.append(f"| `{section.name}.{f.name}` | {kind} | `{shown}` | {help_text} |")
    return "\n".join(rows) + "\n"
