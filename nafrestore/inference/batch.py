"""Restoring many image files: output naming, skip/overwrite, per-file failures, progress and a summary.

Each output keeps its file's path relative to the input folder it was found in (or just its name for files
given directly), its format (unless ``ext``), bit depth, channel count and alpha channel. Files that cannot be read,
restored or written are recorded with the reason and the run goes on; :class:`BatchReport` says what happened.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.io import IMAGE_EXTENSIONS, LoadedImage, list_images, load_image, read_image_size, rgb_to_luma, save_image
from ..errors import NafrestoreError, OutputExistsError
from ..models import in_channels
from ..utils.device import resolve_precision
from ..utils.files import OutputClaim, remove_stale_temporaries, targets_with_leftovers
from .api import blend, restore_rgb
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, auto_tile, check_max_megapixels, check_tile, restore_batch

__all__ = ["BatchReport", "Job", "plan_jobs", "restore_files"]


@dataclass
class Job:
    """One input file and the output it becomes."""

    source: Path
    target: Path


@dataclass
class BatchReport:
    """Outcome of :func:`restore_files`.

    Attributes:
        restored: outputs written.
        skipped: inputs whose output already existed (no ``overwrite``).
        failed: (input, reason) for each file that could not be read, restored or written.
        megapixels: pixels restored, in millions.
        seconds: wall-clock time of the run.
    """

    restored: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    megapixels: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """Counts on one line, then one line per failure (file: reason)."""
        rate = f", {self.megapixels / self.seconds:.2f} MP/s" if self.seconds > 0 and self.megapixels else ""
        lines = [
            f"restored {len(self.restored)}, skipped {len(self.skipped)} (output exists), failed {len(self.failed)}"
            f" in {self.seconds:.1f} s{rate}"
        ]
        if self.skipped and not self.restored:
            lines.append("  (use --overwrite to redo existing outputs)")
        for path, reason in self.failed:
            lines.append(f"  FAILED {path}: {reason}")
        return "\n".join(lines)


def _normalise_ext(ext: str | None) -> str | None:
    if ext is None:
        return None
    _refuse_separators("--ext", ext)
    ext = ext.lower() if ext.startswith(".") else f".{ext.lower()}"
    if ext not in IMAGE_EXTENSIONS:
        raise NafrestoreError(
            f"--ext {ext!r} is not a supported image format; use one of {', '.join(IMAGE_EXTENSIONS)}."
        )
    return ext


def _refuse_separators(option: str, value: str) -> None:
    """``--suffix`` and ``--ext`` only rename a file: a folder in them (``/../x``) could point anywhere."""
    if any(sep and sep in value for sep in ("/", os.sep, os.altsep)):
        raise NafrestoreError(
            f"{option} {value!r} holds a path separator; it may only change the output's file name, which stays "
            f"in the -o folder. Remove the '/' (choose the folder with -o)."
        )


def plan_jobs(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    glob: str | None = None,
    suffix: str = "",
    ext: str | None = None,
) -> list[Job]:
    """The (input, output) pairs for files and folders ``inputs`` (folders searched recursively).

    Raises:
        NafrestoreError: an input does not exist, nothing matched, or ``ext`` is not an image format.
    """
    out_dir = Path(out_dir)
    _refuse_separators("--suffix", suffix)
    ext = _normalise_ext(ext)
    out_resolved = out_dir.resolve()
    jobs: list[Job] = []
    for item in inputs:
        root = Path(item)
        for path in list_images(root, glob=glob):
            if root.is_dir() and out_resolved in path.resolve().parents and out_resolved != root.resolve():
                continue  # earlier outputs inside a searched input folder (e.g. -o photos/restored) are not inputs
            relative = path.relative_to(root) if root.is_dir() else Path(path.name)
            name = f"{relative.stem}{suffix}{ext or relative.suffix}"
            jobs.append(Job(path, out_dir / relative.parent / name))
    # Outputs are never inputs of the same run: with -o DIR inside (or equal to) an input folder and a --suffix, a
    # second run would otherwise restore its own outputs (a_r.png -> a_r_r.png).
    targets = {job.target.resolve() for job in jobs}
    jobs = [job for job in jobs if job.source.resolve() not in targets or job.source.resolve() == job.target.resolve()]
    if not jobs:
        pattern = f" matching {glob!r}" if glob else ""
        raise NafrestoreError(
            f"No images{pattern} found in {', '.join(str(i) for i in inputs)} "
            f"(extensions: {', '.join(IMAGE_EXTENSIONS)})."
        )
    return jobs


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, NafrestoreError):
        return str(exc)
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Runner:
    """Per-image work shared by single and batched passes."""

    def __init__(
        self, model: nn.Module, *, tile, overlap, tta, precision, max_megapixels, quality, strength: float = 1.0
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.tile, self.overlap, self.tta = tile, overlap, tta
        self.precision = resolve_precision(precision, self.device)
        self.max_megapixels = max_megapixels
        self.quality = quality
        self.strength = strength
        self.gray_model = in_channels(model) == 1

    def needs_tiling(self, image: LoadedImage) -> bool:
        h, w = image.rgb.shape[:2]
        return auto_tile(h, w, self.tile, self.max_megapixels, self.device) is not None

    def model_input(self, image: LoadedImage) -> np.ndarray:
        """Float32 (H, W, C_model): gray files run as three equal channels through RGB models."""
        return rgb_to_luma(image.rgb)[:, :, None] if self.gray_model else image.rgb

    def restore_one(self, image: LoadedImage) -> np.ndarray:
        colour = self.model_input(image)
        image.rgb = None  # type: ignore[assignment]  # free the input early (large images)
        return restore_rgb(
            self.model,
            colour,
            tile=self.tile,
            overlap=self.overlap,
            tta=self.tta,
            precision=self.precision,
            max_megapixels=self.max_megapixels,
            strength=self.strength,
        )

    def restore_many(self, images: list[LoadedImage]) -> list[np.ndarray]:
        """Same-size images in one forward pass."""
        inputs = np.stack([self.model_input(im) for im in images])
        batch = torch.from_numpy(inputs).permute(0, 3, 1, 2)
        out = restore_batch(self.model, batch, tta=self.tta, precision=self.precision, max_megapixels=math.inf)
        restored = out.permute(0, 2, 3, 1).numpy()
        return [blend(x, np.ascontiguousarray(o), self.strength) for x, o in zip(inputs, restored, strict=True)]

    def save(self, job: Job, image: LoadedImage, restored: np.ndarray, exclusive: bool) -> None:
        if restored.shape[2] == 1:
            restored = np.repeat(restored, 3, axis=2)  # gray model output; written gray below when the file was
        save_image(
            job.target,
            restored,
            bit_depth=image.bit_depth,
            grayscale=image.channels in (1, 2),  # gray and gray+alpha files are written gray
            alpha=image.alpha,
            quality=self.quality,
            exclusive=exclusive,
        )


def restore_files(
    model: nn.Module,
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    glob: str | None = None,
    suffix: str = "",
    ext: str | None = None,
    overwrite: bool = False,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    precision: str = "fp32",
    batch: int = 1,
    max_megapixels: float | None = None,
    quality: int = 95,
    strength: float = 1.0,
    progress: bool = True,
) -> BatchReport:
    """Restore image files into ``out_dir``.

    Args:
        model: from :func:`~nafrestore.inference.api.load_model`.
        inputs: image files and/or folders (searched recursively; ``glob`` filters by name or relative path).
        out_dir: output root; each output keeps its relative path and name, with ``suffix`` added to the stem
            and the extension replaced by ``ext`` when given (e.g. ``png``).
        overwrite: redo outputs that exist (else they are skipped).
        tile, overlap, tta, precision, max_megapixels: see :func:`~nafrestore.inference.api.restore`.
        batch: same-size images (that need no tiling) per forward pass; files are ordered by size to group them.
        quality: JPEG/WebP quality of the outputs.
        strength: 1 writes the restored image, 0 the input, values in between blend them (a denoise slider).
        progress: show a tqdm bar over files with the throughput (MP/s).

    Returns:
        A :class:`BatchReport`; its ``failed`` list names each file that failed and why.

    Raises:
        NafrestoreError: bad arguments, missing inputs, or no images found (nothing is written then).
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if batch < 1:
        raise NafrestoreError(f"--batch must be at least 1; got {batch}.")
    if not 0.0 <= strength <= 1.0:
        raise NafrestoreError(f"--strength must be a number in 0..1 (0: the input, 1: fully restored), got {strength}.")
    check_max_megapixels(max_megapixels, "--max-megapixels")
    if tile is not None:
        check_tile(tile, overlap)  # once, before any file, not once per file
    elif overlap >= DEFAULT_TILE // 2:
        check_tile(DEFAULT_TILE, overlap)  # the tile large images get automatically
    jobs = plan_jobs(inputs, out_dir, glob=glob, suffix=suffix, ext=ext)
    runner = _Runner(
        model,
        tile=tile,
        overlap=overlap,
        tta=tta,
        precision=precision,
        max_megapixels=max_megapixels,
        quality=quality,
        strength=strength,
    )
    report = BatchReport()
    started = time.time()  # outputs written after this, with --overwrite, are a concurrent run's: not redone
    todo = _triage(jobs, Path(out_dir), overwrite, report)
    refused = {source for source, _ in report.failed}  # outputs outside -o or on an input: nothing done there
    _remove_leftovers([job for job in jobs if job.source not in refused])
    if batch > 1:
        todo.sort(key=lambda job: (_size_or_zero(job.source), str(job.source)))
    with _Progress(len(jobs), progress, report) as bar:
        bar.update(len(jobs) - len(todo))
        _run(todo, runner, batch, bar, report, overwrite=overwrite, started=started)
    report.seconds = bar.elapsed
    return report


def _remove_leftovers(jobs: list[Job]) -> None:
    """Remove what killed runs left beside this run's outputs (hidden temporary and claim files), each output
    folder scanned once; a target another live run is writing now keeps its files."""
    by_folder: dict[Path, list[Job]] = {}
    for job in jobs:
        by_folder.setdefault(job.target.parent, []).append(job)
    for folder, folder_jobs in by_folder.items():
        names = targets_with_leftovers(folder)
        for job in folder_jobs:
            claim = OutputClaim(job.target)
            if job.target.name in names and claim.acquire():  # no live writer of it is left
                remove_stale_temporaries(folder, job.target.name)
                claim.release()  # also removes a killed run's claim file


def _claim(job: Job, overwrite: bool, started: float) -> OutputClaim | None:
    """This run's claim on computing ``job`` (see :class:`~nafrestore.utils.files.OutputClaim`), or None when
    another run computes it now or wrote its output meanwhile (without ``overwrite``: at all; with it: since this
    run started), so that two runs into one folder share the work instead of each computing every file.

    Raises:
        OutputError: the output folder cannot be written.
    """
    claim = OutputClaim(job.target)
    if not claim.acquire():
        return None
    try:
        written = job.target.stat().st_mtime
    except OSError:  # no output yet
        return claim
    if not overwrite or written >= started:
        claim.release()
        return None
    return claim


def _triage(jobs: list[Job], out_dir: Path, overwrite: bool, report: BatchReport) -> list[Job]:
    """The jobs to run. Outputs that collide (with an input or with each other) or that resolve outside ``out_dir``
    (through a symbolic link in it) fail up front; existing ones are skipped unless ``overwrite``."""
    todo: list[Job] = []
    seen: dict[Path, Path] = {}
    sources = {job.source.resolve() for job in jobs}
    out_resolved = out_dir.resolve()
    for job in jobs:
        target = job.target.resolve()
        if out_resolved not in target.parents:
            report.failed.append(
                (job.source, f"its output {job.target} resolves to {target}, outside the output folder {out_dir} "
                 f"(a symbolic link in it points elsewhere); nothing was written there")
            )  # fmt: skip
        elif target in sources:
            report.failed.append(
                (job.source, f"its output {job.target} is an input file; choose another -o or a --suffix")
            )
        elif target in seen:
            report.failed.append((job.source, f"its output {job.target} is also the output of {seen[target]}"))
        elif job.target.exists() and not overwrite:
            seen[target] = job.source
            report.skipped.append(job.source)
        else:
            seen[target] = job.source
            todo.append(job)
    return todo


class _Progress:
    """A tqdm bar over files showing the throughput (MP/s), and the run's clock."""

    def __init__(self, total: int, enabled: bool, report: BatchReport) -> None:
        self.report = report
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, unit="img", disable=not enabled, dynamic_ncols=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, n: int = 1) -> None:
        self.bar.set_postfix_str(f"{self.report.megapixels / max(self.elapsed, 1e-9):.2f} MP/s", refresh=False)
        self.bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _run(
    todo: list[Job],
    runner: _Runner,
    batch: int,
    bar: _Progress,
    report: BatchReport,
    *,
    overwrite: bool,
    started: float,
) -> None:
    """Read, restore and write each job; a failure is recorded with its reason and the run goes on.

    Each output is claimed before its file is read (:func:`_claim`); a job another run computes or has written
    meanwhile is counted as skipped. Without ``overwrite`` an output is only ever created, never replaced: when
    another run wrote the same file in the meantime (two runs into one folder), that file is kept and counted as
    skipped.
    """
    claims: dict[Path, OutputClaim] = {}

    def done(job: Job, image: LoadedImage | None, restored: np.ndarray | None, error: BaseException | None) -> None:
        if error is None and image is not None and restored is not None:
            try:
                runner.save(job, image, restored, not overwrite)
                report.restored.append(job.target)
                report.megapixels += restored.shape[0] * restored.shape[1] / 1e6
            except OutputExistsError:
                report.skipped.append(job.source)
            except Exception as exc:  # noqa: BLE001 - a failed write is reported, the run goes on
                error = exc
        if error is not None:
            report.failed.append((job.source, _error_reason(error)))
        claim = claims.pop(job.target, None)
        if claim is not None:
            claim.release()
        bar.update(1)

    pending: list[tuple[Job, LoadedImage]] = []
    try:
        for job in todo:
            try:
                claim = _claim(job, overwrite, started)
                if claim is None:
                    report.skipped.append(job.source)
                    bar.update(1)
                    continue
                claims[job.target] = claim
                image = load_image(job.source)
            except Exception as exc:  # noqa: BLE001 - unreadable file or unwritable folder: report and go on
                done(job, None, None, exc)
                continue
            # Same-size images that need no tiling go through the network together, up to `batch` at a time.
            if pending and (batch == 1 or runner.needs_tiling(image) or pending[0][1].rgb.shape != image.rgb.shape):
                _flush(pending, runner, done)
            pending.append((job, image))
            if len(pending) >= batch or runner.needs_tiling(image):
                _flush(pending, runner, done)
        _flush(pending, runner, done)
    finally:  # an interruption: give the claims up (a kill -9 leaves lock files, which the next run removes)
        for claim in claims.values():
            claim.release()


def _flush(pending: list[tuple[Job, LoadedImage]], runner: _Runner, done: Callable[..., None]) -> None:
    """Restore the pending images (together when several; one at a time if that fails) and empty the list."""
    group = list(pending)
    pending.clear()
    if len(group) > 1:
        try:
            outputs = runner.restore_many([image for _, image in group])
        except Exception:  # noqa: BLE001 - e.g. out of memory: retry one at a time
            outputs = None
        if outputs is not None:
            for (job, image), restored in zip(group, outputs, strict=True):
                done(job, image, restored, None)
            return
    for job, image in group:
        try:
            restored = runner.restore_one(image)
        except Exception as exc:  # noqa: BLE001
            done(job, image, None, exc)
            continue
        done(job, image, restored, None)


def _size_or_zero(path: Path) -> tuple[int, int]:
    try:
        return read_image_size(path)
    except Exception:  # noqa: BLE001 - unreadable: sorted first, fails when loaded
        return (0, 0)
