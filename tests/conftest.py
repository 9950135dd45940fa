"""Shared test set-up: CPU-first, `cuda` marker skipped without a GPU."""

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
