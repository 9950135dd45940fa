"""Config loading: every shipped YAML, overrides, and one clear message per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nafrestore.config import Config, config_from_dict, dump_config, load_config, parse_override
from nafrestore.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    names = {p.name for p in CONFIGS}
    assert {
        "lka-nafnet-w12.yaml",
        "lka-nafnet-w12-lska.yaml",
        "nafnet-sidd-width32.yaml",
        "nafnet-sidd-width64.yaml",
        "nafnet-gopro-width32.yaml",
        "nafnet-gopro-width64.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.run.name == path.stem
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    reloaded = load_config(again)
    reloaded.run.name = cfg.run.name
    assert reloaded == cfg
    assert dump_config(reloaded) == again.read_text()  # the dump is a fixed point: nothing drifts on a reload


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_names_key_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "model:\n  name: nafnet\ntrain:\n  lr: 1e-3\n  bach_size: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "'train.bach_size'" in msg and "line 5" in msg and str(path) in msg
    assert "Did you mean 'train.batch_size'?" in msg


def test_misspelt_model_argument_is_checked_against_the_model_signature(tmp_path):
    path = write(tmp_path, "model:\n  name: lka_nafnet\n  widht: 16\n")
    with pytest.raises(ConfigError, match=r"Did you mean 'model.width'\?"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"Did you mean 'nafnet'\?"):
        load_config(write(tmp_path, "model:\n  name: nafnett\n"))


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.precision=none", r"train.precision .* must be one of 'fp32', 'bf16', 'fp16'; got 'none'"),
        ("train.iters=0", r"train.iters must be >= 1; got 0"),
        ("train.lr=fast", r"train.lr .* must be a number"),
        ("train.ema=1.5", r"train.ema must be a decay in \(0, 1\)"),
        ("train.betas=[0.9]", r"train.betas .* must be a list of 2 values"),
        ("run.device=gpu", r"run.device must be auto, cpu, cuda, cuda:N or mps"),
        ("data.format=folder", r"needs data.train_lq"),
        ("val.metrics=[psnr, ssmi]", r"val.metrics: unknown metric 'ssmi'. Did you mean 'ssim'\?"),
        ("val.best_metric=rfid", r"val.best_metric 'rfid' must be one of val.metrics scored per image"),
        ("train.loss=[{name: psnrr}]", r"train.loss name: unknown loss 'psnrr'. Did you mean 'psnr'\?"),
        ("model.enc_blocks=3", r"model.enc_blocks \(override 'model.enc_blocks=3'\) must be a list of int"),
        ("trian.lr=1", r"Unknown config key 'trian' .*Did you mean 'train'"),
        ("train.lr", r"not of the form section.key=value"),
    ],
)
def test_overrides_are_validated_like_the_file(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_valid_metric_overrides_are_normalised_and_applied():
    cfg = load_config(None, ["val.best_metric=ssim"])
    assert cfg.val.best_metric == "ssim" and cfg.val.metrics == ["psnr", "ssim"]
    cfg = load_config(None, ["val.metrics=[PSNR, ms_ssim, lpips]", "val.best_metric=lpips"])
    assert cfg.val.metrics == ["psnr", "ms-ssim", "lpips"] and cfg.val.best_metric == "lpips"
    assert load_config(None, ["val.metrics=[psnr]"]).val.metrics == ["psnr"]


def test_legacy_amp_key_still_reads():
    # Configs and checkpoints written before train.precision said train.amp: none | bf16 | fp16.
    assert load_config(None, ["train.amp=none"]).train.precision == "fp32"
    assert config_from_dict({"train": {"amp": "bf16"}}).train.precision == "bf16"


def test_overrides_parse_yaml_values():
    cfg = load_config(None, ["train.lr=2e-4", "train.betas=[0.8, 0.99]", "train.grad_clip=null", "model.width=8"])
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.betas == (0.8, 0.99)
    assert cfg.train.grad_clip is None
    assert cfg.model.args == {"width": 8}
    assert parse_override("data.patch_size=128") == ("data.patch_size", 128)
    assert parse_override("run.dir=runs/x") == ("run.dir", "runs/x")


def test_contradictions_are_rejected():
    with pytest.raises(ConfigError, match="val.best_metric 'ssim' must be one of val.metrics"):
        load_config(None, ["val.metrics=[psnr]", "val.best_metric=ssim"])
    with pytest.raises(ConfigError, match="train.min_lr"):
        load_config(None, ["train.lr=1e-4", "train.min_lr=1e-3"])


def test_non_mapping_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "model: [\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_and_dump_are_plain_yaml():
    cfg = config_from_dict({})
    data = yaml.safe_load(dump_config(cfg))
    assert data["model"]["name"] == "lka_nafnet"
    assert data["train"]["loss"] == [{"name": "psnr", "weight": 1.0}]
    assert data["train"]["betas"] == [0.9, 0.9]


def test_readme_config_reference_is_current():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "config_reference.py"
    spec = importlib.util.spec_from_file_location("config_reference", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.README.read_text(encoding="utf-8")
    assert module.render(text) == text, "README.md is stale: run python scripts/config_reference.py"
    for key in ("`train.lr`", "`data.patch_size`", "`val.best_metric`", "`run.device`", "`model.tlc`"):
        assert key in text


def test_a_range_error_blames_the_override_that_set_the_key():
    path = CONFIGS[0]
    with pytest.raises(ConfigError, match=r"train.batch_size must be >= 1; got 0\. \(override 'train.batch_size=0'\)"):
        load_config(path, ["train.batch_size=0"])
    with pytest.raises(ConfigError) as err:
        load_config(path, ["train.batch_size=0"])
    assert str(path) not in str(err.value)
