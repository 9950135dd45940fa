"""Metrics against their reference implementations.

Oracles: scikit-image (SSIM), pytorch_msssim (MS-SSIM), BasicSR's PSNR formula written out in numpy, the lpips
package (LPIPS) and pytorch-fid (Inception features, Frechet distance). No real pretrained weights exist offline, so
the networks are fed randomly initialised weight files generated here, the same file for ours and the oracle.
"""

from __future__ import annotations

import importlib
import math
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.metrics import structural_similarity

from nafrestore.errors import ConfigError, DataError, NafrestoreError
from nafrestore.metrics import (
    RFID,
    MetricSuite,
    MetricWarning,
    count_patches,
    extract_patches,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    image_to_tensor,
    images_to_tensor,
    kernel_inception_distance,
    mean_finite,
    ms_ssim,
    ms_ssim_num_scales,
    parse_metric_names,
    psnr,
    quantize,
    ssim,
    tensor_to_uint8,
)
from nafrestore.metrics.fid import FID_WEIGHTS, FIDInceptionFeatures, build_fid_inception, get_fid_extractor
from nafrestore.metrics.lpips import BACKBONE_WEIGHTS, get_lpips_model
from nafrestore.metrics.lpips import lpips as lpips_metric
from nafrestore.metrics.ssim import MS_SSIM_WEIGHTS, gaussian_window

torch.set_num_threads(2)

SIGMAS = (5, 15, 50)
H, W = 200, 240  # even, > 160: every metric applies; small enough to be fast on a CPU
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection (e.g. a weights download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a metric tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(autouse=True)
def isolated_weights_dirs(monkeypatch, tmp_path):
    """Real weights a developer may have in ~/.cache must not be picked up."""
    monkeypatch.delenv("NAFRESTORE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    """Crops of real photographs, uint8 HxWx3."""
    return {
        "astronaut": skdata.astronaut()[20 : 20 + H, 150 : 150 + W],
        "chelsea": skdata.chelsea()[50 : 50 + H, 100 : 100 + W],
        "coffee": skdata.coffee()[100 : 100 + H, 200 : 200 + W],
    }


def add_noise(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Gaussian noise of ``sigma`` on the 0-255 scale, rounded and clipped to uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(img + rng.normal(0.0, sigma, img.shape)), 0, 255).astype(np.uint8)


def noisy_batch(gt: np.ndarray, sigmas=SIGMAS) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    outs = [add_noise(gt, s, seed=i) for i, s in enumerate(sigmas)]
    return images_to_tensor(outs), images_to_tensor([gt] * len(outs)), outs


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def alex_weights(weights_dir):
    """A randomly initialised torchvision AlexNet state dict under the official file name."""
    import torchvision

    torch.manual_seed(1)
    torch.save(torchvision.models.alexnet().state_dict(), weights_dir / BACKBONE_WEIGHTS["alex"])
    return weights_dir / BACKBONE_WEIGHTS["alex"]


@pytest.fixture(scope="module")
def vgg_weights(weights_dir):
    """A random VGG16 under the official name; only ``features.*`` (59 MB instead of 528 MB), all LPIPS reads."""
    import torchvision

    torch.manual_seed(2)
    features = torchvision.models.vgg.make_layers(VGG16_CFG)  # = vgg16().features, without the 102M-weight classifier
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, weights_dir / BACKBONE_WEIGHTS["vgg"])
    return weights_dir / BACKBONE_WEIGHTS["vgg"]


@pytest.fixture(scope="module")
def inception_weights(weights_dir):
    """A random FID Inception state dict under the official name; He-initialised so features are O(1)."""
    torch.manual_seed(3)
    net = build_fid_inception()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), weights_dir / FID_WEIGHTS)
    return weights_dir / FID_WEIGHTS


@pytest.fixture(scope="module")
def pytorch_fid_model(inception_weights):
    """pytorch-fid's own InceptionV3([3]) with the generated weights, its download patched to return them."""
    pfi = importlib.import_module("pytorch_fid.inception")
    sd = torch.load(inception_weights, map_location="cpu", weights_only=True)
    mp = pytest.MonkeyPatch()
    mp.setattr(pfi, "load_state_dict_from_url", lambda *args, **kwargs: sd)
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        mp.undo()
    return model


# ----------------------------------------------------------------------------------------------------- SSIM


def skimage_ssim(gt: np.ndarray, out: np.ndarray, channel_axis=-1) -> float:
    return structural_similarity(
        gt.astype(np.float64),
        out.astype(np.float64),
        data_range=255,
        channel_axis=channel_axis,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_ssim_matches_skimage(photos, name):
    gt = photos[name]
    pred, target, outs = noisy_batch(gt)
    got = ssim(pred, target)
    assert got.shape == (len(SIGMAS),) and got.dtype == torch.float64
    want = np.array([skimage_ssim(gt, o) for o in outs])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    assert got[0] > got[1] > got[2]  # more noise, lower SSIM


def test_ssim_crop_border_and_odd_size_match_skimage(photos):
    gt = skdata.astronaut()[:201, :243]
    out = add_noise(gt, 15, seed=7)
    got = ssim(image_to_tensor(out), image_to_tensor(gt), crop_border=4).item()
    assert abs(got - skimage_ssim(gt[4:-4, 4:-4], out[4:-4, 4:-4])) < 1e-10


def basicsr_y(img_rgb: np.ndarray) -> np.ndarray:
    """BasicSR's ``to_y_channel`` written out (BasicSR reads BGR, hence the reversed weights): HxW on 0-255."""
    bgr = img_rgb[..., ::-1].astype(np.float32) / 255.0
    y = np.dot(bgr, [24.966, 128.553, 65.481]) + 16.0  # bgr2ycbcr(y_only=True), 0-255 offsets on [0,1] data
    return y / 255.0 * 255.0


def test_ssim_y_channel_matches_skimage_on_basicsr_y(photos):
    gt = photos["chelsea"]
    pred, target, outs = noisy_batch(gt)
    got = ssim(pred, target, y_channel=True).numpy()
    want = [skimage_ssim(basicsr_y(gt), basicsr_y(o), channel_axis=None) for o in outs]
    # BasicSR rounds x / 255 to float32 before the dot product; we stay in float64.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------------- MS-SSIM


def as_255(imgs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).double()


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_ms_ssim_matches_pytorch_msssim(photos, name):
    import pytorch_msssim

    gt = photos[name]
    pred, target, outs = noisy_batch(gt)
    got = ms_ssim(pred, target)
    x, y = as_255(outs), as_255([gt] * len(outs))
    want = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False)
    # pytorch_msssim builds its Gaussian in float32 (~1e-8 off); the variance terms amplify that to ~3e-6.
    assert (got - want).abs().max().item() < 1e-5
    # With our (float64) window the two implementations agree to round-off.
    win = gaussian_window().view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    exact = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False, win=win)
    assert (got - exact).abs().max().item() < 1e-12


def test_ms_ssim_odd_size_pads_like_pytorch_msssim():
    import pytorch_msssim

    gt = skdata.coffee()[:177, :243]  # odd at several scales: exercises the padded average pooling
    out = add_noise(gt, 15, seed=3)
    got = ms_ssim(image_to_tensor(out), image_to_tensor(gt)).item()
    win = gaussian_window().view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    want = pytorch_msssim.ms_ssim(as_255([out]), as_255([gt]), data_range=255, size_average=False, win=win).item()
    assert abs(got - want) < 1e-12


def test_ms_ssim_y_channel_matches_pytorch_msssim(photos):
    import pytorch_msssim

    gt = photos["coffee"]
    out = add_noise(gt, 15, seed=4)
    got = ms_ssim(image_to_tensor(out), image_to_tensor(gt), y_channel=True).item()
    yo, yg = (torch.from_numpy(basicsr_y(a).copy())[None, None] for a in (out, gt))
    want = pytorch_msssim.ms_ssim(yo, yg, data_range=255, size_average=False).item()
    assert abs(got - want) < 1e-5


def test_ms_ssim_identical_is_one_and_small_images_fail_clearly(photos):
    x = image_to_tensor(photos["astronaut"])
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    small = x[..., :160, :200]
    with pytest.raises(DataError, match=r"160x200.*allow_fewer_scales") as err:
        ms_ssim(small, small)
    assert isinstance(err.value, NafrestoreError)
    # crop_border counts: 170 px - 2 * 5 = 160 is too small
    with pytest.raises(DataError, match="160x"):
        ms_ssim(x[..., :170, :], x[..., :170, :], crop_border=5)


def test_ms_ssim_fewer_scales_renormalises_weights(photos):
    ssim_mod = importlib.import_module("pytorch_msssim.ssim")

    assert [ms_ssim_num_scales(s, 300, True) for s in (161, 160, 81, 80, 41, 40, 21, 20, 11)] == [
        5,
        4,
        4,
        3,
        3,
        2,
        2,
        1,
        1,
    ]
    with pytest.raises(DataError):
        ms_ssim_num_scales(10, 300, True)

    gt = photos["chelsea"][:100, :120]  # 4 scales
    out = add_noise(gt, 15, seed=5)
    got = ms_ssim(image_to_tensor(out), image_to_tensor(gt), allow_fewer_scales=True).item()
    # Oracle: pytorch_msssim's own per-scale terms, 4 scales, its first 4 weights renormalised.
    x, y = as_255([out]), as_255([gt])
    win = gaussian_window().view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:4], dtype=torch.float64)
    weights = weights / weights.sum()
    terms = []
    for level in range(4):
        s, cs = ssim_mod._ssim(x, y, data_range=255, win=win, size_average=False)
        if level < 3:
            terms.append(torch.relu(cs))
            pad = [d % 2 for d in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    terms.append(torch.relu(s))
    want = torch.prod(torch.stack(terms) ** weights.view(-1, 1, 1), dim=0).mean().item()
    assert abs(got - want) < 1e-12
    assert ms_ssim(image_to_tensor(gt), image_to_tensor(gt), allow_fewer_scales=True).item() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------- PSNR


def basicsr_psnr(gt: np.ndarray, out: np.ndarray, crop: int = 0, y_channel: bool = False) -> float:
    """BasicSR's calculate_psnr: float64, crop, optional Y on 0-255, 20 log10(255 / sqrt(mse))."""
    a, b = gt.astype(np.float64), out.astype(np.float64)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    if y_channel:
        a, b = basicsr_y(a.astype(np.uint8)), basicsr_y(b.astype(np.uint8))
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 20.0 * np.log10(255.0 / np.sqrt(mse))


def y_exact(img: np.ndarray) -> np.ndarray:
    """BT.601 Y by hand in float64: 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B on 0-255."""
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
@pytest.mark.parametrize(("y_channel", "crop"), [(False, 0), (True, 0), (True, 4)])
def test_psnr_matches_basicsr_formula(photos, name, y_channel, crop):
    gt = photos[name]
    pred, target, outs = noisy_batch(gt)
    got = psnr(pred, target, y_channel=y_channel, crop_border=crop).numpy()
    assert got.shape == (len(SIGMAS),)
    # BasicSR itself (float32 division inside to_y_channel): agrees to ~1e-6 dB
    np.testing.assert_allclose(got, [basicsr_psnr(gt, o, crop, y_channel) for o in outs], rtol=0, atol=1e-5)
    # the same formula in exact float64 arithmetic: round-off only
    rows, cols = slice(crop, H - crop), slice(crop, W - crop)
    f = y_exact if y_channel else (lambda a: a.astype(np.float64))
    exact = [10 * np.log10(255.0**2 / np.mean((f(gt)[rows, cols] - f(o)[rows, cols]) ** 2)) for o in outs]
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-10)


def test_psnr_identical_is_inf_and_left_out_of_the_mean(photos):
    gt = photos["coffee"]
    pred = images_to_tensor([gt, add_noise(gt, 5, 0), gt])
    vals = psnr(pred, images_to_tensor([gt] * 3))
    assert math.isinf(vals[0]) and math.isinf(vals[2]) and math.isfinite(vals[1])
    mean, n_inf = mean_finite(vals)
    assert n_inf == 2 and mean == pytest.approx(vals[1].item())


def test_mean_finite_edge_cases():
    assert mean_finite([1.0, 3.0]) == (2.0, 0)
    assert mean_finite([math.inf, 2.0, math.inf]) == (2.0, 2)
    assert mean_finite([math.inf]) == (math.inf, 1)
    m, n = mean_finite([])
    assert math.isnan(m) and n == 0
    m, n = mean_finite([math.nan, 1.0])  # a NaN is a bug somewhere: it must show
    assert math.isnan(m) and n == 0


# ----------------------------------------------------------------------------------------------------- inputs


def test_quantize_rounds_to_8_bits_by_default(photos):
    gt = image_to_tensor(photos["astronaut"])
    off = torch.rand_like(gt) * 0.4 / 255.0  # less than half a level: disappears when rounded
    assert torch.isinf(psnr(gt + off, gt)).all()
    assert torch.isfinite(psnr(gt + off, gt, quantize=False)).all()
    assert ssim(gt + off, gt).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(gt + off, gt, quantize=False).item() < 1.0
    q = quantize(torch.tensor([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 0.3, 1.0, 1.7]))
    assert torch.equal(q * 255, torch.tensor([0.0, 0.0, 0.0, 2.0, 76.0, 255.0, 255.0]))  # half to even, clamped


def test_array_helpers_uint8_uint16_bgr(photos):
    img8 = photos["chelsea"]
    t8 = image_to_tensor(img8)
    assert t8.shape == (1, 3, H, W) and t8.dtype == torch.float32
    t16 = image_to_tensor(img8.astype(np.uint16) * 257)  # 65535 / 255 = 257: the same image in 16 bits
    assert (t16 - t8).abs().max() < 1e-6
    assert torch.equal(image_to_tensor(img8[..., ::-1].copy(), bgr=True), t8)
    assert np.array_equal(tensor_to_uint8(t8)[0], img8)
    u8 = torch.from_numpy(img8).permute(2, 0, 1)[None]
    noisy = image_to_tensor(add_noise(img8, 15, 0))
    assert psnr(noisy, u8).item() == psnr(noisy, t8).item()  # uint8 tensors are read as /255


def test_input_validation(photos):
    x = image_to_tensor(photos["coffee"])
    with pytest.raises(DataError, match="differ in shape"):
        psnr(x, x[..., :100])
    with pytest.raises(DataError, match="channels"):
        psnr(torch.zeros(1, 4, 32, 32), torch.zeros(1, 4, 32, 32))
    with pytest.raises(DataError, match="11x11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
    with pytest.raises(DataError, match="crop_border"):
        psnr(x[..., :8, :8], x[..., :8, :8], crop_border=4)
    grey = x.mean(dim=1, keepdim=True)
    assert psnr(grey, grey, y_channel=True).isinf().all()  # grey passes through the Y conversion


# ----------------------------------------------------------------------------------------------------- LPIPS


def lpips_oracle(net: str, weights_file) -> torch.nn.Module:
    """lpips.LPIPS with a random trunk, then the trunk set module by module from a torchvision model."""
    import lpips as lpips_pkg
    import torchvision

    oracle = lpips_pkg.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False).eval()
    tv = torchvision.models.alexnet().features if net == "alex" else torchvision.models.vgg.make_layers(VGG16_CFG)
    sd = torch.load(weights_file, map_location="cpu", weights_only=True)
    tv.load_state_dict({k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")})
    for slice_name, sl in oracle.net.named_children():
        assert slice_name.startswith("slice")
        for idx, module in sl.named_children():
            module.load_state_dict(tv[int(idx)].state_dict())
    return oracle


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_lpips_package(request, photos, weights_dir, net):
    weights_file = request.getfixturevalue("alex_weights" if net == "alex" else "vgg_weights")
    size = 128 if net == "alex" else 64  # VGG is slow on a CPU
    gt = photos["astronaut"][:size, :size]
    pred, target, _ = noisy_batch(gt)
    got = lpips_metric(pred, target, net=net, weights_dir=weights_dir, allow_unverified=True)
    assert got.shape == (3,) and got.dtype == torch.float64
    with torch.no_grad():
        want = lpips_oracle(net, weights_file)(pred * 2 - 1, target * 2 - 1).flatten().double()
    assert (got - want).abs().max().item() < 1e-6
    assert got[0] < got[1] < got[2]
    assert lpips_metric(target, target, net=net, weights_dir=weights_dir, allow_unverified=True).abs().max() < 1e-6
    # built once per (net, device, file)
    m1 = get_lpips_model(net, "cpu", weights_dir=weights_dir, allow_unverified=True)
    assert get_lpips_model(net, "cpu", weights_dir=weights_dir, allow_unverified=True) is m1


def test_lpips_refuses_unverified_weights_by_default(alex_weights, weights_dir):
    from nafrestore.errors import WeightsError

    with pytest.raises(WeightsError, match="checksum"):
        get_lpips_model("alex", "cpu", weights_dir=weights_dir)


# ----------------------------------------------------------------------------------------------------- rFID / KID


def test_fid_features_match_pytorch_fid(weights_dir, inception_weights, pytorch_fid_model):
    ours = get_fid_extractor("cpu", weights_dir=weights_dir, allow_unverified=True)
    assert isinstance(ours, FIDInceptionFeatures)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 96, 128)
    with torch.no_grad():
        got = ours(x)
        want = pytorch_fid_model(x)[0].flatten(1)
    assert got.shape == (3, 2048)
    assert got.abs().mean() > 1e-2  # the generated weights give non-degenerate features
    assert (got - want).abs().max().item() < 1e-4
    # the same state-dict layout as pytorch-fid's wrapper
    assert ours.state_dict().keys() == pytorch_fid_model.state_dict().keys()


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")  # inside pytorch-fid's sqrtm call
@pytest.mark.parametrize("dim", [16, 128])
def test_frechet_distance_matches_pytorch_fid(dim):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(dim)
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    s1, s2 = a @ a.T / dim + 0.5 * np.eye(dim), b @ b.T / dim + 0.5 * np.eye(dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    got = frechet_distance(mu1, s1, mu2, s2)
    want = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert abs(got - want) <= 1e-6 * abs(want)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("n1", "n2", "dim"), [(6, 9, 256), (40, 30, 64), (300, 200, 64)])
def test_frechet_from_features_low_rank_path(n1, n2, dim):
    """N < D takes the nuclear-norm path, N >= D the eigenvalue path: both equal the statistics-based distance."""
    rng = np.random.default_rng(n1)
    f1, f2 = rng.normal(size=(n1, dim)), 1.3 * rng.normal(size=(n2, dim)) + 0.2
    want = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert frechet_distance_from_features(f1, f2) == pytest.approx(want, rel=1e-7)
    assert frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)


def test_patch_counts_and_contents():
    assert count_patches(512, 512, 256) == 4 + 1
    assert count_patches(1000, 700, 256) == 3 * 2 + 3 * 2
    assert count_patches(300, 400, 256) == 1 + 0
    assert count_patches(255, 1000, 256) == 0
    assert count_patches(512, 512, 256, shift=0) == 4
    assert count_patches(480, 320, 64) == 7 * 5 + 7 * 4  # shifted: 448 // 64, 288 // 64
    x = torch.arange(2 * 3 * 512 * 768, dtype=torch.float32).reshape(2, 3, 512, 768)
    p = extract_patches(x, 256)
    assert p.shape == (2 * count_patches(512, 768, 256), 3, 256, 256)
    assert torch.equal(p[0], x[0, :, :256, :256])
    assert torch.equal(p[1], x[0, :, :256, 256:512])  # row-major tiles
    assert torch.equal(p[3], x[0, :, 256:512, :256])
    assert torch.equal(p[6], x[1, :, :256, :256])  # then the second image
    shifted = p[12:]  # after both images' grids come the shifted tiles, cropped by 128 px at the top left
    assert torch.equal(shifted[0], x[0, :, 128:384, 128:384])
    assert torch.equal(shifted[1], x[0, :, 128:384, 384:640])


def test_kid_matches_hand_formula():
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(40, 8)), rng.normal(size=(30, 8)) + 0.3

    def mmd(x, y):  # unbiased MMD^2, polynomial kernel (x.y/d + 1)^3, written with explicit off-diagonal masks
        d, m = x.shape[1], x.shape[0]
        k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
        off = ~np.eye(m, dtype=bool)
        return k(x, x)[off].mean() + k(y, y)[off].mean() - 2 * k(x, y).mean()

    # subsets of 20 from each set, drawn as torchmetrics / clean-fid do
    got_mean, got_std = kernel_inception_distance(f1, f2, subsets=5, subset_size=20, seed=3)
    rs = np.random.default_rng(3)
    vals = [mmd(f1[rs.choice(40, 20, replace=False)], f2[rs.choice(30, 20, replace=False)]) for _ in range(5)]
    assert got_mean == pytest.approx(np.mean(vals), rel=1e-12)
    assert got_std == pytest.approx(np.std(vals), rel=1e-12)
    # whole sets: one exact value
    assert kernel_inception_distance(f1[:30], f2, subset_size=1000)[0] == pytest.approx(mmd(f1[:30], f2), rel=1e-12)


def test_rfid_accumulator_matches_pytorch_fid_features(weights_dir, inception_weights, pytorch_fid_model):
    gt = [skdata.astronaut()[:96, 100:196], skdata.coffee()[100:196, 200:296]]
    out = [add_noise(g, 25, seed=i) for i, g in enumerate(gt)]
    acc = RFID(patch_size=64, weights_dir=weights_dir, allow_unverified=True)
    per_image = count_patches(96, 96, 64)  # 1 tile + 1 shifted by 32 px
    assert per_image == 2
    for o, g in zip(out, gt, strict=True):  # two update() calls: the accumulator spans batches
        assert acc.update(image_to_tensor(o), image_to_tensor(g)) == per_image
    assert acc.n_samples == 2 * per_image
    with pytest.warns(MetricWarning, match="fewer than the 2048"):
        res = acc.compute(kid=True, kid_subsets=10)
    assert res["n_samples"] == 4 and res["kid_subset_size"] == 4
    # oracle: pytorch-fid's network on the same patches, its statistics (np.mean / np.cov) and our distance
    with torch.no_grad():
        fp, fg = (
            torch.cat([pytorch_fid_model(extract_patches(image_to_tensor(a), 64))[0].flatten(1) for a in imgs])
            .double()
            .numpy()
            for imgs in (out, gt)
        )
    ours_p, ours_g = acc.features()
    assert np.abs(ours_p - fp).max() < 1e-4 and np.abs(ours_g - fg).max() < 1e-4
    assert res["rfid"] == pytest.approx(frechet_distance_from_features(fp, fg), rel=1e-9)
    # (The distance itself is checked against pytorch-fid's on well-conditioned covariances above: on these rank-3
    # 2048 x 2048 covariances scipy's sqrtm takes minutes and is accurate to only ~1e-6.)
    assert res["rfid"] > 0
    assert res["kid"] == pytest.approx(kernel_inception_distance(fp, fg)[0], rel=1e-5, abs=1e-9)
    mu, sigma = feature_statistics(ours_p)
    assert mu.shape == (2048,) and sigma.shape == (2048, 2048)


def test_rfid_needs_patches(weights_dir, inception_weights):
    acc = RFID(patch_size=256, weights_dir=weights_dir, allow_unverified=True)
    small = torch.rand(2, 3, 100, 120)
    assert acc.update(small, small) == 0
    with pytest.raises(DataError, match="fid_patch"):
        acc.compute()


# ----------------------------------------------------------------------------------------------------- suite


def test_parse_metric_names():
    assert parse_metric_names("psnr, SSIM,ms_ssim,psnr") == ["psnr", "ssim", "ms-ssim"]
    assert parse_metric_names(["lpips", "kid"]) == ["lpips", "kid"]
    assert parse_metric_names("all") == ["psnr", "ssim", "ms-ssim", "lpips", "rfid", "kid"]
    with pytest.raises(ConfigError, match="Did you mean 'rfid'"):
        parse_metric_names("psnr,fid")
    with pytest.raises(ConfigError, match="no metrics"):
        parse_metric_names(" , ")


def test_metric_suite_end_to_end(weights_dir, alex_weights, inception_weights):
    gts = [skdata.astronaut()[:176, :176], skdata.chelsea()[:176, :176], skdata.coffee()[:176, :176]]
    outs = [add_noise(gts[0], 10, 0), gts[1], add_noise(gts[2], 30, 2)]  # the second is perfect: PSNR inf
    suite = MetricSuite(
        "psnr,ssim,ms-ssim,lpips,rfid,kid",
        fid_patch=128,
        weights_dir=weights_dir,
        allow_unverified_weights=True,
        kid_subsets=5,
    )
    rows = suite.update(images_to_tensor(outs[:2]), images_to_tensor(gts[:2]))
    rows += suite.update(images_to_tensor(outs[2:]), images_to_tensor(gts[2:]))
    assert len(rows) == 3 and set(rows[0]) == {"psnr", "ssim", "ms-ssim", "lpips"}
    pred, gt = images_to_tensor(outs), images_to_tensor(gts)
    for name, fn in (("psnr", psnr), ("ssim", ssim), ("ms-ssim", ms_ssim)):
        np.testing.assert_allclose([r[name] for r in rows], fn(pred, gt).numpy(), rtol=0, atol=1e-12)
    lp = lpips_metric(pred, gt, weights_dir=weights_dir, allow_unverified=True)
    np.testing.assert_allclose([r["lpips"] for r in rows], lp.numpy(), rtol=0, atol=1e-6)
    assert math.isinf(rows[1]["psnr"])

    with pytest.warns(MetricWarning):
        res = suite.compute()
    assert res["n_images"] == 3 and res["n_inf"]["psnr"] == 1
    assert res["psnr"] == pytest.approx((rows[0]["psnr"] + rows[2]["psnr"]) / 2)
    assert res["ssim"] == pytest.approx(np.mean([r["ssim"] for r in rows]))
    assert res["fid_samples"] == 3 * count_patches(176, 176, 128)
    assert res["rfid"] > 0 and math.isfinite(res["kid"])
    assert res["ms_ssim_scales"] == {5: 3}
    assert res["settings"]["weights_verified"] is False
    assert any("inf" in n for n in res["notes"]) and any("not sha256-verified" in n for n in res["notes"])
    suite.reset()
    with pytest.raises(DataError):
        suite.compute()


def test_metric_suite_options():
    x = torch.rand(2, 3, 64, 64)
    suite = MetricSuite("psnr,ssim,ms-ssim", y_channel=True, crop_border=2, allow_fewer_scales=True)
    rows = suite.update(x, x.flip(-1))
    assert rows[0]["psnr"] == pytest.approx(psnr(x[:1], x[:1].flip(-1), y_channel=True, crop_border=2).item())
    res = suite.compute()
    assert res["ms_ssim_scales"] == {3: 2} and any("renormalised" in n for n in res["notes"])
    with pytest.raises(DataError, match="allow_fewer_scales"):
        MetricSuite("ms-ssim").update(x, x)
    with pytest.raises(ConfigError):
        MetricSuite("psnr", crop_border=-1)
    with pytest.raises(ConfigError):
        MetricSuite("lpips", lpips_net="squeeze")


# ----------------------------------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(photos, weights_dir, alex_weights, inception_weights):
    gt = photos["coffee"]
    pred, target, _ = noisy_batch(gt)
    for fn in (psnr, ssim, ms_ssim):
        cpu = fn(pred, target)
        gpu = fn(pred.cuda(), target.cuda())
        assert gpu.device.type == "cuda"
        assert (gpu.cpu() - cpu).abs().max().item() < 1e-9
    opts = {"weights_dir": weights_dir, "allow_unverified": True}
    lp_cpu = lpips_metric(pred, target, **opts)
    lp_gpu = lpips_metric(pred.cuda(), target.cuda(), **opts)
    assert (lp_gpu.cpu() - lp_cpu).abs().max().item() < 1e-5  # float32 networks: different kernels
    f_cpu = get_fid_extractor("cpu", **opts)(pred)
    f_gpu = get_fid_extractor("cuda", **opts)(pred.cuda()).cpu()
    assert (f_gpu - f_cpu).abs().max().item() < 1e-3 * f_cpu.abs().max().item()
