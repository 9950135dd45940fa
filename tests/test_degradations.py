"""Synthetic degradations: every type runs, keeps shape and range, is seeded; noise levels; config errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nafrestore.config import load_config
from nafrestore.data.datasets import degraded_training_pair
from nafrestore.data.degradations import (
    BAYER_PATTERNS,
    DEGRADATIONS,
    CameraNoise,
    CameraParams,
    CameraShake,
    Degradation,
    OneOf,
    Pipeline,
    build_degradation,
    defocus_kernel,
    demosaic,
    mosaic,
    motion_kernel,
    process,
    seed_for,
    shake_kernel,
    shake_trajectory,
    unprocess,
)
from nafrestore.data.degradations.blur import _smooth_masks
from nafrestore.errors import ConfigError, DataError

SPECS = {
    "gaussian_noise": {"sigma": [5, 50]},
    "poisson_gaussian_noise": {"peak": [5, 60], "sigma": [0, 5]},
    "motion_blur": {"kernel_size": 15},
    "camera_shake": {"size": [3, 15], "regions": [1, 2]},
    "gaussian_blur": {"sigma": [0.5, 2.5]},
    "defocus_blur": {"radius": [1, 3]},
    "jpeg": {"quality": [10, 60]},
    "camera_noise": {"shot_noise": [1e-4, 1.2e-2], "bayer": ["RGGB", "GBRG"]},
    "one_of": {
        "weights": [2, 1],
        "pipelines": [[{"type": "gaussian_noise", "sigma": [5, 50]}], [{"type": "jpeg", "quality": [10, 60]}]],
    },
}


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 64x64 RGB image with edges and texture, float32 in [0, 1]."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64] / 63.0
    img = np.stack([xx, yy, (xx + yy) / 2], axis=2)
    img[20:40, 20:40] = 1.0
    img += rng.normal(0, 0.05, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def test_all_registered_types_are_covered():
    assert sorted(SPECS) == DEGRADATIONS.names()


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_each_type_keeps_shape_range_and_is_deterministic(image, kind):
    degrade = build_degradation([{"type": kind, **SPECS[kind]}])
    original = image.copy()
    a = degrade(image, np.random.default_rng(7))
    b = degrade(image, np.random.default_rng(7))
    c = degrade(image, np.random.default_rng(8))
    np.testing.assert_array_equal(image, original)  # input untouched
    assert a.shape == image.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # every spec above has a random part
    assert np.abs(a - image).mean() > 1e-3  # it did something


def test_pipeline_applies_in_order(image):
    specs = [{"type": "gaussian_blur", "sigma": 1.0}, {"type": "gaussian_noise", "sigma": 10}]
    pipeline = build_degradation(specs)
    assert len(pipeline) == 2
    blur, noise = (build_degradation([s]) for s in specs)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(pipeline(image, rng_a), noise(blur(image, rng_b), rng_b))
    np.testing.assert_array_equal(build_degradation([])(image, rng_a), image)


@pytest.mark.parametrize("sigma", [5, 15, 25])
def test_gaussian_noise_std_matches_sigma(sigma):
    grey = np.full((64, 64, 3), 0.5, np.float32)  # mid-grey: clipping never triggers at these sigmas
    noisy = build_degradation([{"type": "gaussian_noise", "sigma": sigma}])(grey, np.random.default_rng(0))
    assert noisy.std() == pytest.approx(sigma / 255, rel=0.03)
    np.testing.assert_allclose(noisy * 255, np.rint(noisy * 255), atol=1e-3)  # quantized to 8-bit levels
    raw = build_degradation([{"type": "gaussian_noise", "sigma": sigma, "quantize": False}])
    assert not np.allclose(raw(grey, np.random.default_rng(0)) * 255 % 1, 0)


def test_gaussian_noise_without_clip_can_leave_range():
    white = np.ones((32, 32, 3), np.float32)
    out = build_degradation([{"type": "gaussian_noise", "sigma": 25, "clip": False}])(white, np.random.default_rng(0))
    assert out.max() > 1


def test_poisson_noise_grows_with_signal():
    ramp = np.concatenate([np.full((32, 32, 3), 0.1, np.float32), np.full((32, 32, 3), 0.8, np.float32)])
    degrade = build_degradation([{"type": "poisson_gaussian_noise", "peak": 50, "sigma": 0, "quantize": False}])
    out = degrade(ramp, np.random.default_rng(0))
    dark, bright = out[:32].std(), out[32:].std()
    assert dark == pytest.approx(np.sqrt(0.1 / 50), rel=0.1)
    assert bright == pytest.approx(np.sqrt(0.8 / 50), rel=0.1)


def _support_side(kernel: np.ndarray) -> int:
    rows, cols = np.nonzero(kernel > 0)
    return int(max(np.ptp(rows), np.ptp(cols))) + 1


def _straightness(kernel: np.ndarray) -> float:
    """Smaller over larger eigenvalue of the kernel's weighted spatial covariance: ~0 for a straight segment."""
    ys, xs = np.mgrid[: kernel.shape[0], : kernel.shape[1]]
    w = kernel / kernel.sum()
    my, mx = (w * ys).sum(), (w * xs).sum()
    cov = np.array([[(w * (ys - my) ** 2).sum(), (w * (ys - my) * (xs - mx)).sum()], [0.0, (w * (xs - mx) ** 2).sum()]])
    cov[1, 0] = cov[0, 1]
    low, high = np.linalg.eigvalsh(cov)
    return float(low / high)


@pytest.mark.parametrize("size", [3, 11, 25, 41])
def test_camera_shake_kernels_are_normalised_and_within_their_size(size):
    shake = CameraShake(size=size)
    rng = np.random.default_rng(size)
    for _ in range(30):
        k = shake.draw_kernel(rng)
        assert k.dtype == np.float32 and k.min() >= 0
        assert k.sum() == pytest.approx(1, abs=1e-5)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert size - 1 <= _support_side(k) <= size


def test_camera_shake_kernels_are_curved_paths_not_all_straight_lines():
    curved = [_straightness(CameraShake(size=31).draw_kernel(np.random.default_rng(i))) for i in range(60)]
    straight = [_straightness(CameraShake(size=31, anxiety=0).draw_kernel(np.random.default_rng(i))) for i in range(20)]
    assert max(straight) < 0.01  # anxiety 0: the camera never turns, a line
    assert np.mean(np.array(curved) > 0.05) > 0.3  # shake bends a good share of paths
    assert min(curved) < 0.05  # and some stay nearly straight, as short exposures do


def test_camera_shake_trajectory_is_constant_speed_and_starts_at_zero():
    path = shake_trajectory(np.random.default_rng(0), anxiety=0.005)
    steps = np.abs(np.diff(path))
    assert path[0] == 0 and steps == pytest.approx(np.full_like(steps, 60 / (len(path) - 1)))


def test_shake_kernel_is_centred_on_the_middle_of_the_exposure():
    # A straight path sampled at equal times: mid-exposure is the path's middle, so the kernel's mass centre is
    # its centre pixel; cut the exposure to the first half and mid-exposure moves to a quarter of the path.
    path = np.linspace(0, 100, 1001).astype(np.complex128)
    k = shake_kernel(path, extent=21)
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    centre = k.shape[0] // 2
    assert (k * xs).sum() == pytest.approx(centre, abs=0.05) and (k * ys).sum() == pytest.approx(centre, abs=1e-6)
    bent = np.concatenate([np.linspace(0, 50, 501), 50 + 1j * np.linspace(0, 50, 501)[1:]])
    k = shake_kernel(bent.astype(np.complex128), extent=21)
    # mid-exposure is the corner: the kernel centre pixel holds the corner and the path leaves it on two sides
    centre = k.shape[0] // 2
    assert k[centre, centre] > 0 and k[centre, :centre].sum() > 0.4 and k[centre + 1 :, centre].sum() > 0.4


@pytest.mark.parametrize("frames", [2, 8, 10])
def test_camera_shake_frames_gives_one_dot_per_averaged_frame(frames):
    # A straight path of 8 video frames 4 px apart (extent 30): 8 dots, each a bilinear splat of at most 2x2 taps
    # and 1/8 of the mass, the middle frame's dot at the kernel centre (an even count: the later middle frame).
    path = np.linspace(0, 100, 1001).astype(np.complex128)
    k = shake_kernel(path, extent=30, frames=frames)
    assert k.sum() == pytest.approx(1, abs=1e-5) and k.min() >= 0
    row = k[k.shape[0] // 2]
    assert row.sum() == pytest.approx(1, abs=1e-5)  # horizontal: all in the centre row
    dots = np.split(np.nonzero(row)[0], np.nonzero(np.diff(np.nonzero(row)[0]) > 1)[0] + 1)
    assert len(dots) == frames and all(len(d) <= 2 for d in dots)
    assert [row[d].sum() for d in dots] == pytest.approx([1 / frames] * frames, abs=1e-6)
    assert row[k.shape[0] // 2] == pytest.approx(1 / frames, abs=1e-6)
    shake = CameraShake(size=25, frames=[7, 13])
    rng = np.random.default_rng(0)
    for _ in range(20):
        kernel = shake.draw_kernel(rng)
        assert kernel.sum() == pytest.approx(1, abs=1e-5) and np.count_nonzero(kernel) <= 4 * 13
        assert 24 <= _support_side(kernel) <= 25


def test_camera_shake_frames_must_be_an_integer_range():
    with pytest.raises(ValueError, match="frames"):
        CameraShake(frames=1)
    with pytest.raises(ValueError, match="frames"):
        CameraShake(frames=[2.5, 8])


@pytest.mark.parametrize(
    ("spec", "widest"),
    [
        ({"type": "camera_shake", "size": [3, 100000]}, {"type": "camera_shake", "size": [3, 255]}),
        ({"type": "motion_blur", "kernel_size": 257}, {"type": "motion_blur", "kernel_size": 255}),
        ({"type": "gaussian_blur", "sigma": 43}, {"type": "gaussian_blur", "sigma": 42}),
        ({"type": "defocus_blur", "radius": [1, 128]}, {"type": "defocus_blur", "radius": 127}),
    ],
)
def test_blurs_wider_than_255_px_are_refused_with_the_reason(spec, widest):
    """Each crop is cut larger by a blur's reach: camera_shake size 100000 asked for 447 GiB. The widest blur allowed
    builds, reaches at most 255 px across, and degrades a 32 px crop."""
    with pytest.raises(DataError, match=r"(size|kernel_size|sigma|radius) must be .*<= .*255 px across.*downscale"):
        build_degradation([spec], key="data.degradations")
    step = build_degradation([widest], key="data.degradations")
    assert step.margin <= 255
    clean = np.random.default_rng(0).random((600, 600, 3), dtype=np.float32)
    item = degraded_training_pair(clean, step, np.random.default_rng(0), patch_size=32, flip=False, rot90=False)
    assert item["lq"].shape == item["gt"].shape == (3, 32, 32)


def test_stacked_blurs_are_bounded_together():
    shake = {"type": "camera_shake", "size": 255}
    assert build_degradation([shake, shake]).margin == 510
    with pytest.raises(DataError, match=r"data.degradations: its blurs together read 765 px .* more than the 512"):
        build_degradation([shake, shake, shake], key="data.degradations")


def test_a_too_wide_camera_shake_stops_train_before_the_run_directory(tmp_path):
    from typer.testing import CliRunner

    from nafrestore.cli import app

    run = tmp_path / "run"
    config = Path(__file__).resolve().parents[1] / "configs" / "nafnet-gopro-width32.yaml"
    shake = "data.degradations=[{type: camera_shake, size: [3, 100000]}]"
    result = CliRunner().invoke(app, ["train", str(config), "data.format=sample", shake, f"run.dir={run}"])
    assert result.exit_code == 2, result.output
    assert (
        "data.degradations[0] (camera_shake): size must be >= 3 and <= 255, got [3, 100000]: blurs are limited"
        in result.output
    )
    assert not run.exists()


def test_camera_shake_blurs_in_linear_light():
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[:, :, None].repeat(3, axis=2)
    rng = np.random.default_rng(0)
    linear = CameraShake(size=41, anxiety=0.01)(checker, rng)[16:-16, 16:-16]
    encoded = CameraShake(size=41, anxiety=0.01, gamma=1)(checker, np.random.default_rng(0))[16:-16, 16:-16]
    # Half the light of white is 0.5 in linear light, 0.5 ** (1 / 2.2) = 0.73 once encoded, not the 0.5 of a
    # blur of the encoded values.
    assert linear.mean() == pytest.approx(0.5 ** (1 / 2.2), abs=0.03)
    assert encoded.mean() == pytest.approx(0.5, abs=0.03)
    grey = np.full((48, 48, 3), 0.3, np.float32)
    np.testing.assert_allclose(CameraShake(regions=3)(grey, rng), 0.3, atol=1e-5)  # flat stays flat


def test_camera_shake_regions_blend_with_smooth_masks_that_sum_to_one():
    masks = _smooth_masks(np.random.default_rng(0), 3, (128, 96))
    assert masks.shape == (3, 128, 96) and masks.min() >= 0
    np.testing.assert_allclose(masks.sum(axis=0), 1, atol=1e-5)
    assert all(m.max() - m.min() > 0.3 for m in masks)  # each kernel dominates somewhere
    assert max(np.abs(np.diff(masks, axis=1)).max(), np.abs(np.diff(masks, axis=2)).max()) < 0.1  # smoothly


def test_blur_margins_add_up_through_pipelines_and_one_of():
    shake = build_degradation([{"type": "camera_shake", "size": [3, 21]}])
    assert shake.margin == 21
    mixed = build_degradation(
        [
            {"type": "one_of", "pipelines": [[{"type": "gaussian_blur", "sigma": 2}], []], "p": 0.5},
            {"type": "defocus_blur", "radius": 3},
            {"type": "gaussian_noise", "sigma": 5},
        ]
    )
    assert mixed.margin == 6 + 4
    assert build_degradation([{"type": "jpeg"}, {"type": "camera_noise"}]).margin == 0


def test_a_blurred_training_crop_reads_real_context_not_reflections(image):
    # The crop is cut with the blur's margin and cropped back: its pixels are those of blurring the whole image.
    degrade = build_degradation([{"type": "camera_shake", "size": 9, "gamma": 1.0}])
    kernel = CameraShake(size=9, gamma=1.0)
    big = np.tile(image, (2, 2, 1))  # 128 px: room for the crop and its margin
    item = degraded_training_pair(big, degrade, np.random.default_rng(5), patch_size=32, flip=False, rot90=False)
    lq, gt = item["lq"].permute(1, 2, 0).numpy(), item["gt"].permute(1, 2, 0).numpy()
    # Find the crop in the image, then blur the whole image with the same kernel (drawn after the crop's draws).
    top, left = next((y, x) for y in range(97) for x in range(97) if np.array_equal(big[y : y + 32, x : x + 32], gt))
    rng = np.random.default_rng(5)
    for _ in range(2):  # the crop's draws: top, then left
        rng.integers(0, 128 - 32 - 2 * degrade.margin + 1)
    whole = kernel(big, rng)
    np.testing.assert_allclose(lq, whole[top : top + 32, left : left + 32], atol=1e-5)


def test_kernels_are_normalised_and_centred():
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:21, :21]
    for _ in range(5):
        k = motion_kernel(rng, kernel_size=21, length=float(rng.uniform(3, 25)), shake=1.0, impulse=1.0)
        assert k.shape == (21, 21) and k.min() >= 0
        assert k.sum() == pytest.approx(1, abs=1e-5)
        assert (k * ys).sum() == pytest.approx(10, abs=1e-3) and (k * xs).sum() == pytest.approx(10, abs=1e-3)
        assert k[0].sum() == 0 and k[:, -1].sum() == 0  # one-pixel margin
    disk = defocus_kernel(2.2)
    assert disk.shape == (5, 5) and disk.sum() == pytest.approx(1, abs=1e-6)
    np.testing.assert_allclose(disk, disk.T, atol=1e-7)
    np.testing.assert_allclose(disk, disk[::-1], atol=1e-7)
    assert disk[0, 0] < disk[0, 1] < disk[0, 2] < disk[2, 2]  # partly covered edge pixels get partial weight


def test_flat_image_unchanged_by_blurs():
    flat = np.full((32, 32, 3), 0.3, np.float32)
    for kind in ("motion_blur", "gaussian_blur", "defocus_blur"):
        out = build_degradation([{"type": kind, **SPECS[kind]}])(flat, np.random.default_rng(0))
        np.testing.assert_allclose(out, flat, atol=1e-5)


def test_jpeg_keeps_colours_in_rgb_order():
    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 1
    out = build_degradation([{"type": "jpeg", "quality": 90}])(red, np.random.default_rng(0))
    assert out[..., 0].mean() > 0.9 and out[..., 2].mean() < 0.1


def test_seed_for_is_stable_and_distinct():
    assert seed_for("scene/0001", 0) == seed_for("scene/0001", 0)
    assert seed_for("scene/0001", 0) != seed_for("scene/0002", 0)
    assert seed_for("scene/0001", 0) != seed_for("scene/0001", 1)
    # Pinned value: a SHA-256 of the name, not Python's per-process salted hash().
    assert seed_for("astronaut", 0) == 3182611174135261014
    assert 0 <= seed_for("x", -5) < 2**63


@pytest.mark.parametrize(
    "specs,message",
    [
        ([{"type": "gausian_noise"}], r"data\.degradations\[0\].*'gaussian_noise'.*Valid types"),
        ([{"type": "jpeg"}, {"type": "blur"}], r"data\.degradations\[1\].*Valid types"),
        ([{"type": "gaussian_noise", "sigam": 5}], r"degradations\[0\].*'sigam'.*'sigma'.*clip, quantize"),
        ([{"type": "gaussian_noise", "sigma": -1}], r"degradations\[0\].*sigma must be >= 0"),
        ([{"type": "gaussian_noise", "sigma": [30, 10]}], r"low > high"),
        ([{"type": "gaussian_noise", "sigma": "25"}], r"sigma must be a number"),
        ([{"type": "gaussian_noise", "clip": "yes"}], r"clip must be true or false"),
        ([{"type": "jpeg", "quality": 150}], r"quality must be >= 1 and <= 100"),
        ([{"type": "jpeg", "quality": [10.5, 20]}], r"integer"),
        ([{"type": "motion_blur", "kernel_size": 20}], r"odd"),
        ([{"type": "poisson_gaussian_noise", "peak": 0}], r"peak must be > 0"),
        ([{"sigma": 25}], r"degradations\[0\] must be a mapping with a `type`"),
        # camera_noise
        ([{"type": "camera_noise", "shot_noise": [0, 0.01]}], r"degradations\[0\] \(camera_noise\).*needs a low > 0"),
        ([{"type": "camera_noise", "shot_noise": -1}], r"shot_noise must be >= 0"),
        ([{"type": "camera_noise", "bayer": "RGBG"}], r"bayer pattern must be one of RGGB, BGGR, GRBG, GBRG"),
        ([{"type": "camera_noise", "bayer": []}], r"bayer must be a pattern name or a non-empty list"),
        ([{"type": "camera_noise", "exposure_mean": 2}], r"exposure_mean must be >= 0.1 and <= 1"),
        ([{"type": "camera_noise", "read_noise_jitter": "x"}], r"read_noise_jitter must be a number"),
        ([{"type": "camera_noise", "red_gain": 0}], r"red_gain must be > 0"),
        ([{"type": "camera_noise", "noise_reduction": -1}], r"noise_reduction must be >= 0"),
        (
            [{"type": "camera_noise", "pipeline_error": True, "noise_reduction": 1}],
            r"filter the noise alone, which needs pipeline_error: false",
        ),
        ([{"type": "camera_noise", "coarse_noise": 1}], r"coarse_noise must be >= 0 and <= 0.99"),
        ([{"type": "camera_noise", "coarse_noise_sigma": 0}], r"coarse_noise_sigma must be > 0"),
        (
            [{"type": "camera_noise", "pipeline_error": True, "coarse_noise": 0.5}],
            r"filter the noise alone, which needs pipeline_error: false",
        ),
        ([{"type": "camera_noise", "shot": 0.01}], r"'shot'.*Valid parameters of camera_noise: shot_noise"),
        # p
        ([{"type": "jpeg", "p": 1.5}], r"degradations\[0\] \(jpeg\): p, the probability .* \[0, 1\], got 1.5"),
        ([{"type": "jpeg", "p": "half"}], r"p, the probability"),
        ([{"type": "jpeg", "p": True}], r"p, the probability"),
        # one_of
        ([{"type": "one_of"}], r"degradations\[0\] \(one_of\) needs `pipelines`"),
        ([{"type": "one_of", "pipelines": []}], r"degradations\[0\]\.pipelines must be a non-empty list of pipelines"),
        ([{"type": "one_of", "pipelines": {"type": "jpeg"}}], r"degradations\[0\]\.pipelines must be a non-empty"),
        ([{"type": "one_of", "pipelines": [{"type": "jpeg"}]}], r"degradations\[0\]\.pipelines\[0\] must be a list"),
        (
            [{"type": "jpeg"}, {"type": "jpeg"}, {"type": "one_of", "pipelines": [[], [{"type": "gausian_noise"}]]}],
            r"^data\.degradations\[2\]\.pipelines\[1\]\[0\] has unknown degradation type 'gausian_noise'",
        ),
        (
            [{"type": "one_of", "pipelines": [[{"type": "jpeg"}, {"type": "jpeg", "quality": 500}]]}],
            r"^data\.degradations\[0\]\.pipelines\[0\]\[1\] \(jpeg\): quality must be >= 1 and <= 100",
        ),
        (
            [{"type": "one_of", "pipelines": [[{"type": "one_of", "pipelines": [[{"type": "jpeg", "p": 2}]]}]]}],
            r"^data\.degradations\[0\]\.pipelines\[0\]\[0\]\.pipelines\[0\]\[0\] \(jpeg\): p, the probability",
        ),
        ([{"type": "one_of", "pipelines": [[], [0]]}], r"degradations\[0\]\.pipelines\[1\]\[0\] must be a mapping"),
        ([{"type": "one_of", "pipelines": [[], []], "weights": [1]}], r"weights must be a list of 2 non-negative"),
        ([{"type": "one_of", "pipelines": [[], []], "weights": [1, -1]}], r"weights must be a list of 2"),
        ([{"type": "one_of", "pipelines": [[], []], "weights": [0, 0]}], r"not all zero"),
        ([{"type": "one_of", "pipelines": [[], []], "p": [0.5, 0.5]}], r"go in `weights`"),
        ([{"type": "one_of", "pipelines": [[]], "shuffle": 1}], r"shuffle must be true or false"),
    ],
)
def test_bad_specs_raise_data_error(specs, message):
    with pytest.raises(DataError, match=message):
        build_degradation(specs)


def test_nested_schema_errors_reach_the_config_loader():
    bad = "data.degradations=[{type: one_of, pipelines: [[{type: jpeg}], [{type: camera_noise, bayer: XY}]]}]"
    with pytest.raises(ConfigError, match=r"data\.degradations\[0\]\.pipelines\[1\]\[0\] \(camera_noise\)"):
        load_config(None, [bad])


# ----------------------------------------------------------------------------------------------------------------
# Camera noise


def _smooth(size: int = 64, quantized: bool = True) -> np.ndarray:
    """A low-frequency (H, W, 3) image inside the cameras' gamut (no channel near 0 or 1), float32 in [0, 1]."""
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    img = np.stack([0.2 + 0.5 * xx, 0.25 + 0.4 * yy, 0.5 + 0.25 * np.sin(np.pi * (xx + yy))], axis=2)
    return (np.rint(img * 255) / 255 if quantized else img).astype(np.float32)


def _flat(value: float, size: int = 32) -> np.ndarray:
    return np.full((size, size, 3), value, np.float32)


def _unprocess_reference(img: np.ndarray, params: CameraParams) -> np.ndarray:
    """Brooks et al.'s unprocess() (google-research/unprocessing), transcribed in float64, without the mosaic."""
    x = np.clip(img.astype(np.float64), 0, 1)
    x = 0.5 - np.sin(np.arcsin(1 - 2 * x) / 3)
    x = np.maximum(x, 1e-8) ** 2.2
    x = x @ params.rgb2cam.astype(np.float64).T
    gains = np.array([1 / params.red_gain, 1, 1 / params.blue_gain]) / params.rgb_gain
    mask = (np.maximum(x.mean(axis=-1, keepdims=True) - 0.9, 0) / 0.1) ** 2
    return np.clip(x * np.maximum(mask + (1 - mask) * gains, gains), 0, 1)


def test_unprocess_matches_brooks_reference(image):
    """Including the safe_invert_gains highlight blend, and both the 8-bit table and the computed tone curve."""
    rng = np.random.default_rng(0)
    camera = CameraNoise()
    bright = image.copy()
    bright[:16] = 0.9 + 0.1 * bright[:16]  # highlights above the 0.9 inflection in camera space
    for img in (bright, np.rint(bright * 255) / 255):
        for _ in range(5):
            params = camera.draw_params(rng)
            np.testing.assert_allclose(unprocess(img, params), _unprocess_reference(img, params), atol=2e-6)


def test_isp_round_trip_is_exact_without_mosaic():
    """process(unprocess(x)) == x to float precision inside the gamut, so 8-bit inputs come back bit for bit."""
    rng = np.random.default_rng(1)
    camera = CameraNoise()
    for quantized in (True, False):  # the 8-bit lookup table and the computed inverse tone curve
        img = _smooth(quantized=quantized)
        for _ in range(20):
            params = camera.draw_params(rng)
            out = process(unprocess(img, params), params)
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, img, atol=1e-5)  # measured <= 3e-7 (8e-5 of an 8-bit level)
            if quantized:
                np.testing.assert_array_equal(np.rint(out * 255), img * 255)
    white = _flat(1.0)  # saturated highlights stay white (safe_invert_gains), black stays black
    params = camera.draw_params(rng)
    np.testing.assert_allclose(process(unprocess(white, params), params), white, atol=1e-6)
    np.testing.assert_allclose(process(unprocess(0 * white, params), params), 0 * white, atol=1e-6)


@pytest.mark.parametrize("pattern", sorted(BAYER_PATTERNS))
def test_mosaic_demosaic(pattern):
    img = _smooth(quantized=False)
    raw = mosaic(img, pattern)
    assert raw.shape == img.shape[:2] and raw.dtype == np.float32
    out = demosaic(raw, pattern)
    assert out.shape == img.shape and out.dtype == np.float32
    for (dy, dx), c in zip(((0, 0), (0, 1), (1, 0), (1, 1)), BAYER_PATTERNS[pattern], strict=True):
        np.testing.assert_array_equal(out[dy::2, dx::2, c], img[dy::2, dx::2, c])  # own photosites kept
    # Bilinear interpolation is exact on a plane and near-exact on a smooth image, except at the border,
    # where the mirrored mosaic stands in for the missing neighbours.
    yy, xx = np.mgrid[:33, :47].astype(np.float32)
    plane = np.stack([0.1 + 0.01 * xx, 0.2 + 0.01 * yy, 0.3 + 0.005 * (xx + yy)], axis=2)
    np.testing.assert_allclose(demosaic(mosaic(plane, pattern), pattern)[1:-1, 1:-1], plane[1:-1, 1:-1], atol=1e-6)
    error = np.abs(out - img) * 255
    assert error[1:-1, 1:-1].max() < 0.6  # measured 0.50 levels inside, 7 on the border
    assert error.max() < 10


def test_camera_noise_zero_noise_returns_the_image(image):
    """By default only the noise is carried over: with none, any 8-bit image comes back exactly, edges included."""
    on_levels = np.rint(image * 255) / 255
    for kwargs in ({}, {"noise_reduction": [0.5, 2], "chroma_noise_reduction": 3}):
        out = CameraNoise(shot_noise=0, **kwargs)(on_levels, np.random.default_rng(0))
        np.testing.assert_array_equal(out, on_levels)


def test_camera_noise_pipeline_error_keeps_the_demosaicing_artefacts(image):
    """pipeline_error: the input also carries the bilinear round trip's error, largest on edges and detail."""
    on_levels = np.rint(image * 255) / 255
    out = CameraNoise(shot_noise=0, pipeline_error=True)(on_levels, np.random.default_rng(0))
    assert np.abs(out - on_levels).max() * 255 > 10


def test_camera_noise_zero_noise_round_trip():
    """pipeline_error, shot_noise 0: the ISP, mosaic, demosaic and 8 bits return a smooth image within ~1 level."""
    img = _smooth()
    camera = CameraNoise(shot_noise=0, pipeline_error=True)
    errors = np.stack([np.abs(camera(img, np.random.default_rng(seed)) - img) * 255 for seed in range(10)])
    np.testing.assert_allclose(errors, np.rint(errors), atol=1e-3)  # both on 8-bit levels
    # Measured: 1 level inside (half a level of demosaicing, half of quantisation), 4 on the one-pixel border,
    # 0.18 on average.
    assert errors[:, 1:-1, 1:-1].max() <= 1 + 1e-3
    assert errors.max() <= 5 and errors.mean() < 0.3
    for value in (0.0, 0.2, 0.6, 1.0):  # a flat image comes back exactly
        flat = _flat(np.rint(value * 255) / 255)
        np.testing.assert_array_equal(camera(flat, np.random.default_rng(3)), flat)


def test_camera_noise_raw_variance_is_shot_times_signal_plus_read():
    """Undoing the ISP on the output recovers the raw noise at green photosites: variance shot * x + read."""
    shot = 1e-3
    read = float(np.exp(2.18 * np.log(shot) + 1.20))
    # No colour matrix, so no channel mixing can clip noisy shadows; no quantisation, so unprocess inverts exactly.
    camera = CameraNoise(shot_noise=shot, read_noise_jitter=0, color_correction=False, quantize=False)
    variances = {}
    for value in (0.1, 0.7):
        normalised, raw_variance = [], []
        for seed in range(20):
            params = camera.draw_params(np.random.default_rng(seed))  # the draw the call below makes first
            out = camera(_flat(value), np.random.default_rng(seed))
            clean, noisy = unprocess(_flat(value), params)[..., 1], unprocess(out, params)[..., 1]
            residual = np.concatenate([(noisy - clean)[0::2, 1::2].ravel(), (noisy - clean)[1::2, 0::2].ravel()])
            normalised.append(residual / np.sqrt(shot * clean[0, 0] + read))
            raw_variance.append(residual.var())
        assert np.std(normalised) == pytest.approx(1, rel=0.05)
        variances[value] = np.mean(raw_variance)
    assert variances[0.7] > 5 * variances[0.1]  # linear signal about 13x higher


def test_camera_noise_srgb_variance_rises_from_shadows_to_mid_tones():
    """In sRGB, gamma and the tone curve reshape it: rising through the shadows, falling towards white."""
    camera = CameraNoise(shot_noise=5e-3, quantize=False)
    variance = {}
    for value in (0.05, 0.15, 0.35, 0.95):
        residual = [camera(_flat(value), np.random.default_rng(seed)) - value for seed in range(20)]
        variance[value] = float(np.var(residual))
    assert variance[0.05] < variance[0.15] < variance[0.35]
    assert variance[0.35] > 2 * variance[0.05]
    assert variance[0.95] < variance[0.35]  # smoothstep flattens towards white, as camera JPEGs do


def test_camera_noise_is_correlated_in_space_and_colour():
    grey = _flat(0.5, 64)

    def residuals(degradation: Degradation) -> np.ndarray:
        return np.stack([degradation(grey, np.random.default_rng(seed)) - grey for seed in range(10)])

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    camera = residuals(CameraNoise(shot_noise=5e-3))
    white = residuals(build_degradation([{"type": "gaussian_noise", "sigma": 10}]))
    # Bilinear demosaicing averages neighbouring photosites: measured 0.60 horizontally and vertically.
    assert corr(camera[:, :, :-1], camera[:, :, 1:]) > 0.3
    assert corr(camera[:, :-1], camera[:, 1:]) > 0.3
    assert abs(corr(white[:, :, :-1], white[:, :, 1:])) < 0.05
    # The colour matrix mixes the channels' noise (measured -0.37 between red and green); without it they stay
    # independent.
    assert abs(corr(camera[..., 0], camera[..., 1])) > 0.1
    plain = residuals(CameraNoise(shot_noise=5e-3, color_correction=False))
    assert abs(corr(plain[..., 0], plain[..., 1])) < 0.05


def test_camera_noise_reduction_leaves_low_frequency_luma_noise():
    """noise_reduction widens the noise's correlation; a stronger chroma low-pass tips it towards luma (PolyU:
    0.6-0.7 at lag 1, 0.2-0.3 at lag 4, luma std 1.5-2x chroma std)."""
    grey = _flat(0.5, 64)

    def stats(**kwargs: Any) -> tuple[float, float, float]:
        camera = CameraNoise(shot_noise=5e-3, quantize=False, **kwargs)
        res = np.stack([camera(grey, np.random.default_rng(seed)) - grey for seed in range(10)])
        luma = res.mean(axis=3, keepdims=True)

        def lag(k: int) -> float:
            return float(np.corrcoef(res[:, :, :-k].ravel(), res[:, :, k:].ravel())[0, 1])

        return lag(1), lag(4), float(luma.std() / (res - luma).std())

    plain_lag1, plain_lag4, plain_ratio = stats()
    reduced_lag1, reduced_lag4, reduced_ratio = stats(noise_reduction=1.0, chroma_noise_reduction=4.0)
    assert plain_lag4 < 0.05 < 0.2 < reduced_lag4  # measured 0.00 and 0.28
    assert reduced_lag1 > plain_lag1 + 0.2  # measured 0.60 and 0.89
    assert plain_ratio < 1 < 1.5 < reduced_ratio  # measured 0.49 and 1.57: the colour matrix makes chroma heavy


def test_coarse_camera_noise_decays_slowly_like_real_noise_at_the_same_strength():
    """coarse_noise keeps the luma std and lifts the correlation 2-4 px apart, where one Gaussian low-pass leaves
    almost none once lag 1 is high (real camera noise: about 0.65 ** k, lag 4 a third of lag 1,
    bench/noise-statistics.md)."""
    grey = _flat(0.5, 96)

    def stats(**kwargs: Any) -> tuple[float, float, float, float]:
        camera = CameraNoise(shot_noise=5e-3, color_correction=False, quantize=False, noise_reduction=0.7, **kwargs)
        luma = np.stack([camera(grey, np.random.default_rng(seed)) - grey for seed in range(8)]).mean(axis=3)

        def lag(k: int) -> float:
            return float(np.corrcoef(luma[:, :, :-k].ravel(), luma[:, :, k:].ravel())[0, 1])

        return lag(1), lag(2), lag(4), float(luma.std())

    fine = stats()
    coarse = stats(coarse_noise=0.5, coarse_noise_sigma=3.0)
    assert fine[2] < 0.05 and coarse[2] > fine[2] + 0.2  # lag 4
    assert coarse[1] > fine[1] + 0.1  # lag 2
    assert fine[2] / fine[0] < 0.05 and coarse[2] / coarse[0] > 0.25  # lag 4 against lag 1
    assert coarse[3] == pytest.approx(fine[3], rel=0.02)  # the same luma strength
    # Weight 0 is the plain noise reduction, draw for draw.
    image = _flat(0.3, 32)
    np.testing.assert_array_equal(
        CameraNoise(noise_reduction=0.7, coarse_noise=0.0)(image, np.random.default_rng(1)),
        CameraNoise(noise_reduction=0.7)(image, np.random.default_rng(1)),
    )


def test_camera_noise_levels_follow_the_log_log_line():
    camera = CameraNoise()
    rng = np.random.default_rng(0)
    shot, read = np.log(np.array([camera.draw_noise_levels(rng) for _ in range(4000)])).T
    assert shot.min() >= np.log(1e-4) and shot.max() <= np.log(1.2e-2)
    assert shot.mean() == pytest.approx((np.log(1e-4) + np.log(1.2e-2)) / 2, abs=0.1)  # log-uniform
    jitter = read - (2.18 * shot + 1.20)
    assert jitter.mean() == pytest.approx(0, abs=0.02) and jitter.std() == pytest.approx(0.26, rel=0.05)
    assert CameraNoise(shot_noise=0).draw_noise_levels(rng) == (0.0, 0.0)


def test_camera_noise_seeding_shapes_and_range(image):
    camera = build_degradation([{"type": "camera_noise", "shot_noise": [1e-5, 1.2e-2], "bayer": list(BAYER_PATTERNS)}])
    validation = [camera(image, np.random.default_rng(seed_for("scene/0001", 0))) for _ in range(2)]
    np.testing.assert_array_equal(validation[0], validation[1])  # fixed per validation image
    training = [camera(image, np.random.default_rng(seed)) for seed in range(3)]
    assert not np.array_equal(training[0], training[1]) and not np.array_equal(training[1], training[2])
    for shape in ((33, 47, 3), (1, 1, 3), (2, 5, 3), (7, 1, 3)):
        img = np.random.default_rng(0).random(shape, dtype=np.float32)
        out = camera(img, np.random.default_rng(1))
        assert out.shape == shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-3)  # quantized to 8-bit levels


# ----------------------------------------------------------------------------------------------------------------
# Mixing: p and one_of


class _Mark(Degradation):
    """Fills the image with a constant, so the output shows which step ran."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.full_like(img, self.value)


class _Append(Degradation):
    """Records its tag in the first pixel's history (img[0, 0] holds a base-10 number of the tags so far)."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img.copy()
        out[0, 0, 0] = out[0, 0, 0] * 10 + self.tag
        return out


def _within(count: int, n: int, p: float) -> bool:
    """count is within 4.5 standard deviations of a Binomial(n, p) mean."""
    return abs(count - n * p) <= 4.5 * np.sqrt(n * p * (1 - p)) + 1


def test_one_of_picks_branches_with_their_probabilities():
    tiny = np.zeros((2, 2, 3), np.float32)
    pick = OneOf([_Mark(0.0), _Mark(1.0), _Mark(2.0), _Mark(3.0)], weights=[5, 3, 2, 0])
    assert pick.probabilities == [0.5, 0.3, 0.2, 0.0]
    rng = np.random.default_rng(0)
    n = 4000
    counts = np.bincount([int(pick(tiny, rng)[0, 0, 0]) for _ in range(n)], minlength=4)
    assert all(_within(c, n, p) for c, p in zip(counts, pick.probabilities, strict=True)), counts
    assert counts[3] == 0  # a zero weight is never picked


def test_one_of_from_config_mixes_noise_models(image):
    specs = [
        {
            "type": "one_of",
            "weights": [0.4, 0.3, 0.2, 0.1],
            "pipelines": [
                [
                    {"type": "camera_noise", "shot_noise": [1e-5, 1.2e-2]},
                    {"type": "jpeg", "quality": [60, 95], "p": 0.5},
                ],
                [{"type": "poisson_gaussian_noise", "peak": [5, 100], "sigma": [0, 5]}],
                [{"type": "gaussian_noise", "sigma": [0, 50]}, {"type": "jpeg", "quality": [30, 95], "p": 0.3}],
                [],
            ],
        }
    ]
    degrade = build_degradation(specs)
    outputs = [degrade(image, np.random.default_rng(seed)) for seed in range(40)]
    for out in outputs:
        assert out.shape == image.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    clean = sum(np.array_equal(out, image) for out in outputs)
    assert 0 < clean < 15  # the empty branch (10%) leaves the input as it is
    np.testing.assert_array_equal(degrade(image, np.random.default_rng(5)), outputs[5])
    # DataLoader workers may receive it pickled (spawn start method).
    copy = pickle.loads(pickle.dumps(degrade))
    np.testing.assert_array_equal(copy(image, np.random.default_rng(5)), outputs[5])


def test_p_applies_a_step_with_its_probability():
    grey = _flat(0.5, 4)
    rng = np.random.default_rng(0)
    n = 3000
    sometimes = build_degradation([{"type": "gaussian_noise", "sigma": 10, "p": 0.3}])
    applied = sum(not np.array_equal(sometimes(grey, rng), grey) for _ in range(n))
    assert _within(applied, n, 0.3), applied
    never = build_degradation([{"type": "gaussian_noise", "sigma": 10, "p": 0}])
    assert all(np.array_equal(never(grey, rng), grey) for _ in range(50))
    # p: 1 draws nothing extra, so it is the same as no p, bit for bit.
    always = build_degradation([{"type": "gaussian_noise", "sigma": 10, "p": 1}])
    plain = build_degradation([{"type": "gaussian_noise", "sigma": 10}])
    np.testing.assert_array_equal(always(grey, np.random.default_rng(4)), plain(grey, np.random.default_rng(4)))
    # p on one_of applies the whole choice (here: noise or nothing) with that probability.
    maybe = build_degradation([{"type": "one_of", "pipelines": [[{"type": "gaussian_noise", "sigma": 10}]], "p": 0.5}])
    applied = sum(not np.array_equal(maybe(grey, rng), grey) for _ in range(1000))
    assert _within(applied, 1000, 0.5), applied


def test_one_of_shuffle_randomises_the_order():
    start = np.zeros((2, 2, 3), np.float32)
    steps = [_Append(1), _Append(2), _Append(3)]
    shuffled = OneOf([Pipeline(steps)], shuffle=True)
    rng = np.random.default_rng(0)
    n = 1200
    orders = [int(shuffled(start, rng)[0, 0, 0]) for _ in range(n)]
    assert set(orders) == {123, 132, 213, 231, 312, 321}
    assert all(_within(orders.count(o), n, 1 / 6) for o in set(orders))
    assert int(OneOf([Pipeline(steps)])(start, rng)[0, 0, 0]) == 123  # in order without shuffle
    # From Python, pipelines may also be given as lists of specs.
    from_specs = OneOf([[], [{"type": "gaussian_noise", "sigma": 10}]], weights=[1, 0])
    np.testing.assert_array_equal(from_specs(start, rng), start)
