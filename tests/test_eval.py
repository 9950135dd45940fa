"""`nafrestore eval`: folders and models, JSON/CSV/table/report, the input row, clear errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.data import save_image
from nafrestore.metrics import psnr

runner = CliRunner()


def photo(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth random RGB image (H, W, 3) float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 8, w // 8, 3)).astype(np.float32)
    return np.kron(small, np.ones((8, 8, 1), dtype=np.float32))


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    dirs = {k: tmp_path / k for k in ("gt", "lq", "pred", "perfect")}
    for i, name in enumerate(["a", "sub/b", "c"]):
        gt = photo(i, 48 + 16 * (i == 2), 64)  # two sizes: batches are grouped by size
        lq = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
        save_image(dirs["gt"] / f"{name}.png", gt)
        save_image(dirs["lq"] / f"{name}.jpg", lq, quality=100)  # extensions may differ
        save_image(dirs["pred"] / f"{name}.png", (0.5 * gt + 0.5 * lq).astype(np.float32))
        save_image(dirs["perfect"] / f"{name}.png", gt)
    return dirs


def test_eval_folders_writes_json_csv_table_and_report(folders, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--lq", str(folders["lq"]),
         "--metrics", "psnr,ssim", "--json", str(out / "m.json"), "--csv", str(out / "m.csv"),
         "--report", str(out / "report"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "m.json").read_text())
    assert set(data) >= {"summary", "input_summary", "n_images", "images", "settings"}
    assert data["n_images"] == 3 and [im["name"] for im in data["images"]] == ["a", "c", "sub/b"]
    assert set(data["summary"]) == {"psnr", "ssim"}
    assert data["settings"]["quantize"] is True and data["settings"]["crop_border"] == 0
    # the restored images are the average of input and ground truth: better than the input on every image
    assert data["summary"]["psnr"] > data["input_summary"]["psnr"] + 3
    for image in data["images"]:
        assert image["psnr"] > image["input_psnr"] and image["ssim"] > image["input_ssim"]
    rows = list(csv.DictReader((out / "m.csv").open()))
    assert [r["name"] for r in rows] == ["a", "c", "sub/b"]
    assert float(rows[0]["psnr"]) == pytest.approx(data["images"][0]["psnr"])
    assert "restored" in result.output and "input" in result.output
    assert (out / "report" / "comparison.png").stat().st_size > 1000


def test_eval_json_mean_equals_per_image_psnr(folders, tmp_path):
    from nafrestore.data import read_image

    result = runner.invoke(
        app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--json", str(tmp_path / "m.json"),
              "--metrics", "psnr", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "m.json").read_text())
    expected = []
    for n in ("a", "c", "sub/b"):
        expected.append(
            psnr(read_image(folders["pred"] / f"{n}.png")[None], read_image(folders["gt"] / f"{n}.png")[None])
        )
    assert data["summary"]["psnr"] == pytest.approx(float(np.mean([v.item() for v in expected])), rel=1e-9)
    assert data["input_summary"] is None


def test_perfect_prediction_beats_the_input_row(folders, tmp_path):
    result = runner.invoke(
        app, ["eval", "--pred", str(folders["perfect"]), "--gt", str(folders["gt"]), "--lq", str(folders["lq"]),
              "--metrics", "psnr,ssim", "--json", str(tmp_path / "m.json"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["summary"]["psnr"] == "inf"  # JSON has no infinity; identical images give inf
    assert data["settings"]["n_inf"]["psnr"] == 3 and any("identical" in n for n in data["notes"])
    assert math.isfinite(data["input_summary"]["psnr"]) and data["input_summary"]["psnr"] < 40
    assert data["summary"]["ssim"] == pytest.approx(1.0)
    assert data["input_summary"]["ssim"] < 0.99


def test_unmatched_or_mis_sized_pairs_name_the_files(folders, tmp_path):
    (folders["pred"] / "extra.png").write_bytes((folders["pred"] / "a.png").read_bytes())
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--quiet"])
    assert result.exit_code == 2 and "extra" in result.output
    (folders["pred"] / "extra.png").unlink()
    save_image(folders["pred"] / "a.png", photo(0, 32, 32))
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--quiet"])
    assert result.exit_code == 2 and "a.png" in result.output and "same size" in result.output


def test_missing_metric_weights_exit_2_with_the_file_name(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("NAFRESTORE_WEIGHTS_DIR", raising=False)
    for metric, file in (("lpips", "alexnet-owt-7be5be79.pth"), ("rfid", "pt_inception-2015-12-05-6726825d.pth")):
        result = runner.invoke(
            app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--metrics", metric, "--quiet"]
        )
        assert result.exit_code == 2, result.output
        assert file in result.output and "https://" in result.output and "Traceback" not in result.output


def test_unknown_metric_and_bad_arguments(folders):
    result = runner.invoke(
        app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--metrics", "psnrr"]
    )
    assert result.exit_code == 2 and "psnr" in result.output
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"])])
    assert result.exit_code == 2 and "--gt" in result.output


def tiny_run(tmp_path: Path, identity: bool = False) -> tuple[Path, Path]:
    """A run directory as `train` leaves it (config.yaml + checkpoints/best.pt of an untrained tiny NAFNet) whose
    synthetic data are two 64 px photographs in ``clean/``; ``identity`` zeroes the ending (restored == input).

    Returns:
        (run directory, the folder of clean photographs).
    """
    from nafrestore.config import dump_config, load_config
    from nafrestore.models import create_model

    run, clean = tmp_path / "run", tmp_path / "clean"
    for i in range(2):
        save_image(clean / f"img{i}.png", photo(10 + i, 64, 64))
    cfg = load_config(None, ["data.format=synthetic", f"data.train_dir={clean}", f"data.val_dir={clean}",
                             "model.name=nafnet", "model.width=4", "model.enc_blocks=[1]", "model.middle_blocks=0",
                             "model.dec_blocks=[1]", f"run.dir={run}"])  # fmt: skip
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    model = create_model("nafnet", **cfg.model.args)
    if identity:
        with torch.no_grad():
            model.ending.weight.zero_()
            model.ending.bias.zero_()
    torch.save({"format_version": 1, "model_name": "nafnet", "model_args": cfg.model.args, "tlc_train_size": None,
                "config": {}, "model": model.state_dict()}, run / "checkpoints" / "best.pt")  # fmt: skip
    return run, clean


def test_eval_a_model_run_on_its_validation_set_and_on_a_folder(tmp_path):
    run, clean = tiny_run(tmp_path, identity=True)
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", str(run), "--metrics", "psnr,ssim", "--json", str(out), "--quiet",
                                 "--save-images", str(tmp_path / "restored")])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n_images"] == 2
    # an identity model restores nothing: its row equals the input row
    assert data["summary"]["psnr"] == pytest.approx(data["input_summary"]["psnr"], abs=1e-6)
    assert data["summary"]["psnr"] < 30  # Gaussian sigma 25 by default
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["img0.png", "img1.png"]
    result = runner.invoke(app, ["eval", str(run), "--data", str(clean), "--tile", "32", "--overlap", "8", "--quiet",
                                 "--json", str(tmp_path / "m2.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m2.json").read_text())["summary"]["psnr"] == pytest.approx(data["summary"]["psnr"])
    result = runner.invoke(app, ["eval", str(run), "--ckpt", "last"])
    assert result.exit_code == 2 and "last.pt" in result.output


@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
@pytest.mark.parametrize("y_channel", [False, True], ids=["rgb-channels", "y"])
@pytest.mark.parametrize("crop", [0, 4])
def test_eval_agrees_with_basicsr_on_files(tmp_path, basicsr_metrics, gray, y_channel, crop):
    import cv2

    rng = np.random.default_rng(7)
    for i in range(3):
        gt = photo(20 + i, 48, 56)
        noisy = np.clip(gt + rng.normal(0, 0.08, gt.shape), 0, 1).astype(np.float32)
        save_image(tmp_path / "gt" / f"{i}.png", gt, grayscale=gray)
        save_image(tmp_path / "pred" / f"{i}.png", noisy, grayscale=gray)
    out = tmp_path / "e.json"
    args = ["eval", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--metrics", "psnr,ssim",
            "--crop-border", str(crop), "--json", str(out), "--quiet"]  # fmt: skip
    args += ["--y-channel"] if y_channel else []
    args += ["--report", str(tmp_path / "report")] if crop == 0 else []  # the figure copes with gray files too
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ours = {row["name"]: row for row in json.loads(out.read_text())["images"]}
    assert crop or (tmp_path / "report" / "comparison.png").stat().st_size > 1000
    for i in range(3):
        # BasicSR reads files with cv2.imread (BGR, or 2-D for gray) and scores them as they are.
        pred = cv2.imread(str(tmp_path / "pred" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        gt = cv2.imread(str(tmp_path / "gt" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert pred.ndim == (2 if gray else 3)
        want_psnr = basicsr_metrics.calculate_psnr(pred, gt, crop, test_y_channel=y_channel)
        want_ssim = basicsr_metrics.calculate_ssim(pred, gt, crop, test_y_channel=y_channel)
        assert ours[str(i)]["psnr"] == pytest.approx(want_psnr, abs=1e-6)
        assert ours[str(i)]["ssim"] == pytest.approx(want_ssim, abs=1e-6)  # BasicSR takes Y in float32


def test_an_unwritable_output_prints_the_scores_first_and_is_one_message(folders, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for option in ("--report", "--json"):
        result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--quiet",
                                     option, str(blocker / "out")])  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "restored" in result.output and "psnr" in result.output  # the table came first
        assert "a-file is a file, not a folder" in result.output and "Traceback" not in result.output


def test_an_empty_pred_folder_is_called_the_restored_folder(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["eval", "--pred", str(tmp_path / "empty"), "--gt", str(folders["gt"]), "--quiet"])
    assert result.exit_code == 2 and "restored (--pred) folder" in result.output, result.output


def test_eval_of_a_run_needs_neither_its_training_data_nor_its_working_directory(tmp_path, monkeypatch):
    from nafrestore.config import load_config
    from nafrestore.engine import train

    for split in ("train", "val"):
        for i in range(2):
            gt = photo(30 + i, 48, 48)
            save_image(tmp_path / split / "gt" / f"{i}.png", gt)
            save_image(tmp_path / split / "lq" / f"{i}.png", np.clip(gt + 0.05, 0, 1).astype(np.float32))
    monkeypatch.chdir(tmp_path)  # the config names its data relative to here
    cfg = load_config(None, ["data.format=folder", "data.train_lq=train/lq", "data.train_gt=train/gt",
                             "data.val_lq=val/lq", "data.val_gt=val/gt", "data.patch_size=32", "data.num_workers=0",
                             "model.name=nafnet", "model.width=4", "model.enc_blocks=[1]", "model.middle_blocks=0",
                             "model.dec_blocks=[1]", "train.iters=2", "train.batch_size=2", "run.dir=run",
                             "run.device=cpu"])  # fmt: skip
    assert cfg.data.val_lq == str(tmp_path / "val" / "lq")  # stored absolute, said so in the config reference
    run = train(cfg, quiet=True)
    import shutil

    shutil.rmtree(tmp_path / "train")  # the training data is gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["eval", str(tmp_path / run), "--metrics", "psnr", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "restored" in result.output


def test_small_images_for_ms_ssim_name_the_command_line_option(folders):
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--quiet",
                                 "--metrics", "ms-ssim"])  # fmt: skip
    assert result.exit_code == 2 and "--allow-fewer-scales" in result.output, result.output


def test_a_missing_pred_folder_or_a_file_as_gt_is_named_without_mentioning_a_config(folders, tmp_path):
    """Issue 33, item 13: both said "Check the data paths in the config", though no config is involved and the
    file given as --gt exists."""
    missing = tmp_path / "missing"
    result = runner.invoke(app, ["eval", "--pred", str(missing), "--gt", str(folders["gt"]), "--quiet"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"The restored (--pred) folder {missing} does not exist." in text, text
    assert "config" not in text
    a_file = folders["gt"] / "a.png"
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(a_file), "--quiet"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and f"The ground-truth (--gt) folder {a_file} is a file, not a folder." in text, text
    assert "config" not in text and "does not exist" not in text and "Traceback" not in text
