"""Shared test set-up: CPU-first, `cuda` marker skipped without a GPU, and never a download: every test runs offline
(``NAFRESTORE_OFFLINE=1``) with its own download cache, unless it serves files itself (tests/test_hub.py)."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No test reaches the internet: downloads are off (a test that serves files on 127.0.0.1 turns them on), and
    nothing is read from or written to the user's nafrestore cache."""
    monkeypatch.setenv("NAFRESTORE_OFFLINE", "1")
    monkeypatch.setenv("NAFRESTORE_HOME", str(tmp_path_factory.getbasetemp() / "nafrestore-home"))
    monkeypatch.delenv("NAFRESTORE_MIRROR", raising=False)
    monkeypatch.delenv("NAFRESTORE_MAX_IMAGE_MEGAPIXELS", raising=False)  # the default pixel limit


@pytest.fixture(scope="session")
def basicsr_metrics():
    """BasicSR's own ``basicsr.metrics.psnr_ssim`` (``calculate_psnr``, ``calculate_ssim``): the oracle that published
    restoration numbers come from. `make install` adds basicsr without its dependencies; its package ``__init__``
    imports its training stack (and a torchvision module removed in 0.17), so only the metric modules are loaded,
    under empty parent packages."""
    import importlib
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("basicsr")
    assert spec is not None, "basicsr is not installed: run `make install` (it adds basicsr==1.4.2 with --no-deps)"
    root = spec.submodule_search_locations[0]
    for name, sub in (("basicsr", ""), ("basicsr.metrics", "/metrics")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [root + sub]
            sys.modules[name] = package
    return importlib.import_module("basicsr.metrics.psnr_ssim")
