"""The models that ship inside the package, with their real weights: each loads by name, fits the 5 MB limit and
has its model card; the default does what its card says on crops of held-out photographs (the sample split's
validation photographs, never trained on)."""

from __future__ import annotations

import numpy as np
import pytest

from nafrestore import load_model, restore
from nafrestore.data.degradations import build_degradation
from nafrestore.data.sample import sample_images
from nafrestore.models import pretrained

SHIPPED = [name for name, entry in pretrained.PRETRAINED.items() if entry.shipped]
# The strong-noise check of scripts/bench_real_pairs.py at its middle level (shot noise 0.05, blotchy chroma, JPEG).
STRONG = [
    {"type": "camera_noise", "shot_noise": 0.05, "color_correction": False, "noise_reduction": 0.5,
     "chroma_noise_reduction": 2.0},
    {"type": "jpeg", "quality": 90},
]  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    """192 px crops of two validation photographs, float32 in [0, 1] on 8-bit levels."""
    photos = dict(sample_images("val"))
    names = ("astronaut", "chelsea")
    return {name: np.round(photos[name][:192, :192] * 255).astype(np.float32) / 255 for name in names}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_loads_by_name_within_the_size_limit_with_its_card(name):
    entry = pretrained.PRETRAINED[name]
    assert entry.path.stat().st_size <= 5_000_000
    card = entry.card.read_text()
    assert f"`{name}`" in card and "Where it stops being good" in card
    model = load_model(name)
    out = restore(model, np.full((24, 20, 3), 0.5, np.float32))
    assert out.shape == (24, 20, 3) and np.isfinite(out).all()


# Mild camera noise, as on the PolyU photographs: below the gate, so the mild network restores it.
MILD = [
    {"type": "camera_noise", "shot_noise": 2e-3, "color_correction": False, "noise_reduction": 0.5,
     "chroma_noise_reduction": 1.0},
    {"type": "jpeg", "quality": 90},
]  # fmt: skip


def colour_psnr(a: np.ndarray, b: np.ndarray, factor: int) -> float:
    """PSNR of the ``factor``-times area-downscaled images (the colour shift of scripts/bench_real_pairs.py)."""
    h, w = a.shape[0] // factor * factor, a.shape[1] // factor * factor

    def down(x: np.ndarray) -> np.ndarray:
        return x[:h, :w].astype(np.float64).reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3))

    return psnr(down(a), down(b))


def test_default_restores_mild_noise_as_v4_and_strong_noise_without_moving_colour(crops):
    default, v4 = load_model("default"), load_model("lka-nafnet-w12-denoise-real-v4")
    first = load_model("lka-nafnet-w12-denoise-real")
    assert pretrained.find_pretrained("default").name == "lka-nafnet-w12-denoise-real-v5"
    for name, clean in crops.items():
        assert psnr(restore(default, clean), clean) >= 40.0, name  # clean: changed little
        # Mild noise: v4's mild path; the chelsea crop (wavelet level above 8) with its correction faded a little.
        noisy = build_degradation(MILD)(clean, np.random.default_rng(0)).astype(np.float32)
        ours = restore(default, noisy)
        assert psnr(ours, clean) >= psnr(noisy, clean) + 1.0, name
        if name == "astronaut":
            np.testing.assert_array_equal(ours, restore(v4, noisy))
        # Strong noise: v5's strong network, as good as v4's; the colour of larger areas stays (v4's moved).
        noisy = build_degradation(STRONG)(clean, np.random.default_rng(0)).astype(np.float32)
        ours, theirs = restore(default, noisy), restore(v4, noisy)
        assert (
            psnr(ours, clean) >= psnr(theirs, clean) - 0.5
            and psnr(ours, clean) >= psnr(restore(first, noisy), clean) + 3
        )
        assert colour_psnr(ours, noisy, 16) >= colour_psnr(theirs, noisy, 16) + 1.0, name


def test_default_leaves_clean_texture_that_v4_took_for_strong_noise():
    """scikit-image's grass and gravel (clean, fine texture everywhere): the whole-image wavelet estimate reads them
    above 15 levels, so v4 sent them to its strong network; v5's gate reads their quiet blocks."""
    from skimage import data

    default, v4 = load_model("default"), load_model("lka-nafnet-w12-denoise-real-v4")
    for texture in (data.grass(), data.gravel()):
        clean = np.repeat(texture[:192, :192, None], 3, axis=2).astype(np.float32) / 255
        ours, theirs = restore(default, clean), restore(v4, clean)
        assert psnr(ours, clean) >= 45.0 and colour_psnr(ours, clean, 8) >= 42.0
        assert psnr(ours, clean) >= psnr(theirs, clean) + 2.0
