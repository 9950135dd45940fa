"""`infer --precision auto`: bf16 on a CPU only where it is native, measured faster and within 50 dB of fp32."""

from __future__ import annotations

import pytest
import torch
from test_infer_cli import tiny_model

from nafrestore.inference import fold_for_inference
from nafrestore.inference import precision as prec
from nafrestore.inference.precision import choose_precision, cpu_has_native_bf16, measure_bf16


@pytest.fixture(scope="module")
def folded() -> torch.nn.Module:
    return fold_for_inference(tiny_model())


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse avx avx2 fma", False),
        ("fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni", True),
        ("fpu avx2 amx_bf16 amx_tile", True),
        ("fpu avx2 avx512_bf16x", False),  # whole flags only
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(cpuinfo) is native


def test_no_cpuinfo_means_no_native_bf16(tmp_path):
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_asked_precisions_are_kept_and_nothing_is_measured(folded, monkeypatch):
    monkeypatch.setattr(prec, "measure_bf16", lambda *a, **k: pytest.fail("measured"))
    for name in ("fp32", "bf16", "fp16"):
        assert choose_precision(folded, name).precision == name
    choice = choose_precision(folded, "auto", native_bf16=False)
    assert (choice.precision, choice.speedup) == ("fp32", None)
    assert "no native bf16" in choice.reason


@pytest.mark.parametrize(
    ("speedup", "psnr", "expected", "why"),
    [(1.7, 58.0, "bf16", "x1.70"), (1.7, 45.0, "fp32", "under 50 dB"), (0.8, 60.0, "fp32", "not faster")],
)
def test_auto_keeps_bf16_only_when_faster_and_faithful(folded, monkeypatch, speedup, psnr, expected, why):
    monkeypatch.setattr(prec, "measure_bf16", lambda *a, **k: (speedup, psnr))
    choice = choose_precision(folded, "auto", native_bf16=True)
    assert choice.precision == expected and why in choice.reason
    assert (choice.speedup, choice.psnr) == (speedup, psnr)


def test_measure_bf16_runs_both_precisions_on_a_real_model(folded):
    """Emulated or native, bf16 autocast gives a close but not identical output; the speed ratio is positive."""
    speedup, psnr = measure_bf16(folded, size=32, rounds=1, repeats=1)
    assert speedup > 0
    assert 25 < psnr < 120  # bf16 keeps 8 mantissa bits: close to fp32, never bit-identical through a network
