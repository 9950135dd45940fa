"""The command line: help, info, config show, and user errors as one message with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "info", "config", "prepare"):
        assert command in result.output


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "nafrestore", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "train" in result.stdout


def test_info_on_a_config_prints_counts_and_layout():
    result = runner.invoke(app, ["info", str(CONFIGS / "lka-nafnet-w12.yaml"), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "444,927" in result.output
    assert "3 x LKABlock" in result.output and "1 x NAFBlock" in result.output


def test_info_on_the_lska_preset_prints_its_counts():
    result = runner.invoke(app, ["info", str(CONFIGS / "lka-nafnet-w12-lska.yaml"), "--size", "256"])
    assert result.exit_code == 0, result.output
    assert "431,679" in result.output and "1.371 G" in result.output
    assert "'attention': 'lska', 'kernel_size': 23" in result.output


def test_info_on_an_lka_config_with_kernel_53(tmp_path):
    # lka-nafnet-w12 with LKA at k = 53: 5x5, then 17x17 dilation 3; 240 more weights per channel of the 276 LKABlock
    # channels (12 + 3 * 24 + 4 * 48) than at 23 (5x5 + 7x7).
    text = (CONFIGS / "lka-nafnet-w12.yaml").read_text()
    text = text.replace("  drop_path_rate: 0.0\n", "  drop_path_rate: 0.0\n  attention: lka\n  kernel_size: 53\n")
    (tmp_path / "lka53.yaml").write_text(text)
    result = runner.invoke(app, ["info", str(tmp_path / "lka53.yaml"), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert f"{444_927 + 240 * 276:,}" in result.output and "'attention': 'lka', 'kernel_size': 53" in result.output


def test_info_on_a_checkpoint(tmp_path):
    args = {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}
    model = create_model("nafnet", **args)
    torch.save({"model_name": "nafnet", "model_args": args, "model": model.state_dict()}, tmp_path / "m.pt")
    result = runner.invoke(app, ["info", str(tmp_path / "m.pt"), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert f"{sum(p.numel() for p in model.parameters()):,}" in result.output


def test_info_takes_what_infer_takes_a_run_directory_and_a_preset_name(tmp_path):
    args = {"width": 4, "enc_blocks": [1], "middle_blocks": 1, "dec_blocks": [1]}
    model = create_model("nafnet", **args)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model_name": "nafnet", "model_args": args, "model": model.state_dict()},
               tmp_path / "run" / "checkpoints" / "best.pt")  # fmt: skip
    result = runner.invoke(app, ["info", str(tmp_path / "run"), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert f"{sum(p.numel() for p in model.parameters()):,}" in result.output
    result = runner.invoke(app, ["info", "lka-nafnet-w12", "--size", "64"])  # configs/lka-nafnet-w12.yaml
    assert result.exit_code == 0 and "444,927" in result.output, result.output


def test_misspelt_validation_metric_fails_at_load_with_a_suggestion():
    result = runner.invoke(app, ["config", "show", str(CONFIGS / "lka-nafnet-w12.yaml"), "val.metrics=[psnr,ssmi]"])
    assert result.exit_code == 2
    assert "val.metrics" in result.output and "Did you mean 'ssim'?" in result.output


def test_config_show_applies_overrides():
    result = runner.invoke(app, ["config", "show", str(CONFIGS / "nafnet-sidd-width32.yaml"), "train.lr=2e-4"])
    assert result.exit_code == 0, result.output
    assert "lr: 0.0002" in result.output and "width: 32" in result.output


def test_user_error_is_one_message_exit_2_no_traceback():
    result = runner.invoke(app, ["config", "show", str(CONFIGS / "lka-nafnet-w12.yaml"), "train.lrr=1"])
    assert result.exit_code == 2
    assert "Did you mean 'train.lr'?" in result.output
    assert "Traceback" not in result.output
    result = subprocess.run(
        [sys.executable, "-m", "nafrestore", "info", "missing.yaml"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: Config file missing.yaml does not exist")
    assert "Traceback" not in result.stderr
