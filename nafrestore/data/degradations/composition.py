"""Composition: a step applied with probability ``p``, one of several pipelines, and the builder from config."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import DataError
from ...registry import did_you_mean
from .base import DEGRADATIONS, Degradation, Pipeline, _boolean

__all__ = ["MAX_MARGIN", "OneOf", "RandomApply", "build_degradation"]

#: The most context (px, on each side) a pipeline's blurs may read together (``Degradation.margin``): two of the
#: widest blurs (:data:`.blur.MAX_BLUR_SIZE`). Each step is bounded on its own; stacked, their margins add up.
MAX_MARGIN = 512


class RandomApply(Degradation):
    """Applies a degradation with probability ``p``, else returns a copy of the input (the ``p`` config key).

    The decision takes one ``rng.random()`` draw from the sample's own generator, before the step's own draws;
    ``p`` of 0 or 1 draws nothing, so ``p: 1`` is the same as no ``p``.
    """

    def __init__(self, step: Degradation, p: float) -> None:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"p, the probability of applying the step, must be a number in [0, 1], got {p!r}")
        self.step = step
        self.p = float(p)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.p >= 1 or (self.p > 0 and rng.random() < self.p):
            return self.step(img, rng)
        return np.array(img, dtype=np.float32, copy=True)

    @property
    def margin(self) -> int:
        return self.step.margin


@DEGRADATIONS.register("one_of")
class OneOf(Degradation):
    """Applies one of several pipelines, picked per sample with the given probabilities.

    One config can thus train on several noise models at once, e.g. camera noise for 60% of the samples,
    Poisson-Gaussian for 20%, and Gaussian then JPEG for the rest; an empty pipeline ``[]`` leaves the sample
    clean. ``shuffle`` applies the chosen pipeline's steps in a random order, BSRGAN's shuffled degradation
    model (Zhang et al., ICCV 2021); a single pipeline with ``shuffle: true`` is a randomly ordered pipeline.

    Args:
        pipelines: non-empty list of pipelines, each a list of degradation specs (``[]`` for none) or, from
            Python, built :class:`Degradation` objects.
        weights: one non-negative number per pipeline, normalised to probabilities (``[0.6, 0.2, 0.2]``,
            ``[3, 1, 1]``); default equal. These are not ``p``, which any step (``one_of`` included) may carry as
            the probability of applying it at all.
        shuffle: apply the chosen pipeline's steps in a random order.
    """

    def __init__(
        self,
        pipelines: Sequence[Sequence[Mapping[str, Any]] | Degradation],
        weights: Sequence[float] | None = None,
        shuffle: bool = False,
    ) -> None:
        if isinstance(pipelines, str | Mapping) or not isinstance(pipelines, Sequence) or not pipelines:
            raise ValueError(
                "pipelines must be a non-empty list of pipelines, each a list of degradations ([] for none), "
                f"got {pipelines!r}"
            )
        self.pipelines = [
            branch if isinstance(branch, Degradation) else build_degradation(branch, key=f"pipelines[{j}]")
            for j, branch in enumerate(pipelines)
        ]
        if weights is None:
            weights = [1.0] * len(self.pipelines)
        if (
            isinstance(weights, str | Mapping)
            or not isinstance(weights, Sequence)
            or len(weights) != len(self.pipelines)
            or not all(isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w < math.inf for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                f"weights must be a list of {len(self.pipelines)} non-negative numbers (one per pipeline, not all "
                f"zero), got {weights!r}"
            )
        self.weights = [float(w) for w in weights]
        self.shuffle = _boolean("shuffle", shuffle)
        cumulative = np.cumsum(self.weights)
        self._cumulative = cumulative / cumulative[-1]  # ends at exactly 1, also after trailing zero weights

    @property
    def margin(self) -> int:
        return max(branch.margin for branch in self.pipelines)

    @property
    def probabilities(self) -> list[float]:
        """The probability of each pipeline (the normalised weights)."""
        return [w / sum(self.weights) for w in self.weights]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # One uniform draw against the cumulative probabilities (searchsorted never picks a zero-weight branch);
        # a single pipeline draws nothing.
        j = (
            0
            if len(self.pipelines) == 1
            else min(int(np.searchsorted(self._cumulative, rng.random(), "right")), len(self.pipelines) - 1)
        )
        branch = self.pipelines[j]
        if self.shuffle and isinstance(branch, Pipeline) and len(branch) > 1:
            branch = Pipeline([branch.steps[k] for k in rng.permutation(len(branch))])
        return branch(img, rng)


_ONE_OF_EXAMPLE = (
    "{type: one_of, weights: [0.7, 0.3], pipelines: [[{type: camera_noise}], "
    "[{type: gaussian_noise, sigma: [0, 50]}, {type: jpeg, quality: [30, 95]}]]}"
)


def _build_branches(value: Any, where: str) -> list[Pipeline]:
    """Builds ``one_of``'s ``pipelines`` (a list of lists of specs), naming ``where[j][i]`` in errors."""
    if isinstance(value, str | Mapping) or not isinstance(value, Sequence) or not value:
        raise DataError(
            f"{where} must be a non-empty list of pipelines, each a list of degradations ([] for none), e.g. "
            f"{_ONE_OF_EXAMPLE}; got {value!r}."
        )
    branches = []
    for j, branch in enumerate(value):
        if isinstance(branch, str | Mapping) or not isinstance(branch, Sequence):
            raise DataError(
                f"{where}[{j}] must be a list of degradations ([] for none), e.g. "
                f"[{{type: gaussian_noise, sigma: 25}}, {{type: jpeg, quality: 50}}]; got {branch!r}."
            )
        branches.append(build_degradation(branch, key=f"{where}[{j}]"))
    return branches


def build_degradation(specs: Sequence[Mapping[str, Any]] | None, *, key: str = "data.degradations") -> Pipeline:
    """Builds the pipeline described by a list of ``{type: name, **params}`` mappings, applied in order.

    Any mapping may also carry ``p``, the probability (in [0, 1]) of applying that step to a sample; ``one_of``
    nests pipelines (``{type: one_of, weights: [...], pipelines: [[...], [...]]}``), built recursively.

    Args:
        specs: e.g. ``[{"type": "motion_blur", "kernel_size": 31}, {"type": "gaussian_noise", "sigma": [0, 10]}]``.
            None or empty gives an identity pipeline.
        key: the config key the list came from, used in error messages.

    Returns:
        A :class:`Pipeline`, callable as ``pipeline(img, rng)`` on (H, W, 3) float32 arrays in [0, 1].

    Raises:
        DataError: an entry is not a mapping, names an unknown type or parameter (with a did-you-mean and the
            valid names), or has a bad value; the message names ``key[i]``, or the nested item such as
            ``key[2].pipelines[1][0]``.
    """
    if isinstance(specs, str | Mapping) or not isinstance(specs, Sequence | None):
        raise DataError(
            f"{key} must be a list of degradations, e.g. [{{type: gaussian_noise, sigma: 25}}]; got {specs!r}."
        )
    pipeline = Pipeline([_build_step(spec, f"{key}[{i}]") for i, spec in enumerate(specs or [])])
    if pipeline.margin > MAX_MARGIN:
        raise DataError(
            f"{key}: its blurs together read {pipeline.margin} px of context around each pixel, more than the "
            f"{MAX_MARGIN} allowed: every training crop is cut larger by that much on each side, so memory grows with "
            "its square. Use fewer or smaller blurs (each blur is at most 255 px across)."
        )
    return pipeline


def _build_step(spec: Any, where: str) -> Degradation:
    """One ``{type: name, p: ..., **params}`` mapping -> its degradation (wrapped in :class:`RandomApply` for ``p``);
    errors name ``where``."""
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise DataError(
            f"{where} must be a mapping with a `type` key, e.g. {{type: gaussian_noise, sigma: 25}}; got "
            f"{spec!r}. Valid types: {', '.join(DEGRADATIONS.names())}."
        )
    kind = spec["type"]
    if not isinstance(kind, str) or kind not in DEGRADATIONS:
        hint = did_you_mean(str(kind), DEGRADATIONS.names())
        raise DataError(
            f"{where} has unknown degradation type {kind!r}.{hint} Valid types: {', '.join(DEGRADATIONS.names())}."
        )
    factory = DEGRADATIONS.get(kind)
    valid = [p for p in inspect.signature(factory).parameters if p != "self"]
    params = {k: v for k, v in spec.items() if k not in ("type", "p")}
    for name in params:
        if name not in valid:
            hint = did_you_mean(str(name), [*valid, "p"])
            raise DataError(
                f"{where} ({kind}) has unknown parameter {name!r}.{hint} "
                f"Valid parameters of {kind}: {', '.join(valid) or 'none'} (and p, the probability of applying it)."
            )
    if factory is OneOf:
        if "pipelines" not in params:
            raise DataError(
                f"{where} (one_of) needs `pipelines`, a list of pipelines each a list of degradations "
                f"([] for none), e.g. {_ONE_OF_EXAMPLE}."
            )
        params["pipelines"] = _build_branches(params["pipelines"], f"{where}.pipelines")
    try:
        step = factory(**params)
        if "p" in spec:
            if factory is OneOf and isinstance(spec["p"], list | tuple):
                raise ValueError(
                    f"p is the probability of applying the whole one_of step, a number in [0, 1], got "
                    f"{spec['p']!r}; the probabilities of its pipelines go in `weights`"
                )
            step = RandomApply(step, spec["p"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} ({kind}): {exc}. Valid parameters of {kind}: {', '.join(valid)}.") from exc
    return step
