"""The HTML report's files: what `eval --report` and `nafrestore report` write, several models, the image writer.

The page's behaviour in a browser (sorting, the slider, keys, no network) is tested in test_report_browser.py.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval import photo, tiny_run  # the eval tests' smooth photograph and tiny run directory
from typer.testing import CliRunner

from nafrestore import evaluation as ev
from nafrestore.cli import app
from nafrestore.data import read_image, save_image
from nafrestore.errors import DataError, NafrestoreError
from nafrestore.metrics import MetricSuite
from nafrestore.report import ReportImages, build_report, write_eval_report
from nafrestore.report.images import safe_relative

runner = CliRunner()


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    dirs = {k: tmp_path / k for k in ("gt", "lq", "pred", "pred2")}
    for i, name in enumerate(["a", "sub/b", "c"]):
        gt = photo(i, 48 + 16 * (i == 2), 64)
        lq = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
        save_image(dirs["gt"] / f"{name}.png", gt)
        save_image(dirs["lq"] / f"{name}.png", lq)
        save_image(dirs["pred"] / f"{name}.png", (0.5 * gt + 0.5 * lq).astype(np.float32))
        save_image(dirs["pred2"] / f"{name}.png", (0.8 * gt + 0.2 * lq).astype(np.float32))
    return dirs


def referenced_files(data: dict) -> set[str]:
    return {f[k] for image in data["images"] for f in image["files"].values() for k in ("full", "preview", "thumb")}


def assert_self_contained(page: Path) -> None:
    """No address outside the folder: no scheme in src/href/url(), no @import, every relative file there."""
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", text, re.I) and "@import" not in text
    assert "<script src" not in text and '<link rel="stylesheet"' not in text
    data = json.loads((page.parent / "report.json").read_text())
    for rel in referenced_files(data):
        assert (page.parent / rel).is_file(), rel


def test_eval_report_writes_a_self_contained_page_with_every_view_of_every_image(folders, tmp_path):
    report = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--lq",
                                 str(folders["lq"]), "--report", str(report), "--json", str(tmp_path / "e.json"),
                                 "--metrics", "psnr,ssim", "--crop-border", "2", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"report: {report / 'report.html'}" in result.output
    assert (report / "comparison.png").stat().st_size > 1000  # the figure is still there
    data = json.loads((report / "report.json").read_text())
    assert data["format"] == "nafrestore-report" and data["n_images"] == 3
    assert [v["key"] for v in data["views"]] == ["input", "restored", "gt"]
    assert data["settings"]["crop_border"] == 2 and data["settings"]["y_channel"] is False
    assert data["settings"]["quantize"] is True
    assert set(data["summary"]) == {"input", "restored"} and data["summary"]["restored"]["psnr"] > 20
    assert data["sources"]["restored (--pred)"] == str(folders["pred"])
    image = {im["name"]: im for im in data["images"]}["sub/b"]
    assert (image["width"], image["height"]) == (64, 48)
    assert set(image["files"]) == {"input", "restored", "gt"}
    assert image["files"]["restored"]["full"] == "images/restored/sub/b.png"
    assert image["files"]["restored"]["preview"] == image["files"]["restored"]["full"]  # small: no second copy
    assert image["scores"]["restored"]["psnr"] > image["scores"]["input"]["psnr"]
    # the full-size files are the images as scored, losslessly
    assert torch.equal(read_image(report / image["files"]["gt"]["full"]), read_image(folders["gt"] / "sub/b.png"))
    assert torch.equal(read_image(report / image["files"]["input"]["full"]), read_image(folders["lq"] / "sub/b.png"))
    assert_self_contained(report / "report.html")
    page = (report / "report.html").read_text()
    assert "crop_border" in page and "<code>2</code>" in page and 'id="summary-table"' in page
    # the eval JSON's rows name the same files (relative to the report folder); the CSV does not
    rows = json.loads((tmp_path / "e.json").read_text())["images"]
    assert rows[2]["files"]["gt"]["full"] == "images/gt/sub/b.png"


def test_score_writes_each_image_as_it_is_scored(folders, tmp_path):
    """Bounded memory: an item's files exist before the next item is even read."""
    images = ReportImages(tmp_path / "r", preview_side=32, thumb_side=16)
    seen: list[str] = []

    def items():
        for item in ev.folder_items(folders["pred"], folders["gt"], folders["lq"]):
            if seen:
                assert (tmp_path / "r" / "images" / "restored" / f"{seen[-1]}.png").is_file()
            seen.append(item.name)
            yield item

    result = ev.score(items(), MetricSuite("psnr"), input_suite=MetricSuite("psnr"), report_images=images)
    files = result.images[1]["files"]  # "c", 64x64
    assert files["restored"]["preview"] == "previews/restored/c.jpg"
    preview = read_image(tmp_path / "r" / files["restored"]["preview"])
    thumb = read_image(tmp_path / "r" / files["gt"]["thumb"])
    assert tuple(preview.shape) == (3, 32, 32) and tuple(thumb.shape) == (3, 16, 16)
    assert tuple(read_image(tmp_path / "r" / "previews/gt/sub/b.jpg").shape) == (3, 24, 32)


def test_gray_images_and_names_that_sanitise_alike(tmp_path):
    images = ReportImages(tmp_path)
    gray = torch.full((1, 8, 12), 0.5)
    one = images.write("x?y", restored=gray, gt=gray)
    two = images.write("x*y", restored=gray, gt=gray)
    assert one["gt"]["full"] == "images/gt/x_y.png" and two["gt"]["full"] == "images/gt/x_y~2.png"
    assert tuple(read_image(tmp_path / one["gt"]["full"]).shape) == (3, 8, 12)
    assert safe_relative("../../etc/passwd") == "_/_/etc/passwd" and safe_relative("/abs") == "_/abs"


def test_several_models_one_report_json_and_csv(folders, tmp_path):
    report = tmp_path / "cmp"
    result = runner.invoke(app, ["eval", "--pred", f"half={folders['pred']}", "--pred", str(folders["pred2"]),
                                 "--gt", str(folders["gt"]), "--lq", str(folders["lq"]), "--report", str(report),
                                 "--json", str(tmp_path / "e.json"), "--csv", str(tmp_path / "e.csv"),
                                 "--metrics", "psnr", "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = result.output.splitlines()
    assert [line.split()[0] for line in table[1:4]] == ["half", "pred2", "input"]
    data = json.loads((tmp_path / "e.json").read_text())
    assert list(data["models"]) == ["half", "pred2"] and data["n_images"] == 3
    half, better = data["models"]["half"], data["models"]["pred2"]
    assert half["pred"] == str(folders["pred"]) and better["summary"]["psnr"] > half["summary"]["psnr"]
    assert better["input_summary"] == half["input_summary"] == data["input_summary"]
    assert better["images"][0]["input_psnr"] == half["images"][0]["input_psnr"]  # the input, scored once
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    assert [(r["model"], r["name"]) for r in rows][:4] == [("half", "a"), ("half", "c"), ("half", "sub/b"),
                                                          ("pred2", "a")]  # fmt: skip
    assert "files" not in rows[0] and float(rows[3]["psnr"]) == pytest.approx(better["images"][0]["psnr"])
    rep = json.loads((report / "report.json").read_text())
    assert [(v["key"], v["label"]) for v in rep["views"]] == [
        ("input", "input"), ("half", "half"), ("pred2", "pred2"), ("gt", "ground truth")]  # fmt: skip
    assert set(rep["images"][0]["files"]) == {"input", "half", "pred2", "gt"}
    assert set(rep["images"][0]["scores"]) == {"input", "half", "pred2"}
    assert sorted(p.name for p in (report / "images").iterdir()) == ["gt", "half", "input", "pred2"]
    assert_self_contained(report / "report.html")


def test_several_pred_folders_errors(folders, tmp_path):
    (tmp_path / "x" / "pred").mkdir(parents=True)
    save_image(tmp_path / "x" / "pred" / "a.png", photo(0))
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--pred", str(tmp_path / "x" / "pred"),
                                 "--gt", str(folders["gt"]), "--quiet"])  # fmt: skip
    assert result.exit_code == 2 and "restored images of x/pred" in result.output and "no input" in result.output
    assert ev.model_labels([folders["pred"], tmp_path / "x" / "pred"]) == {
        f"{tmp_path.name}/pred": folders["pred"], "x/pred": tmp_path / "x" / "pred"}  # fmt: skip
    with pytest.raises(NafrestoreError, match="NAME=FOLDER"):
        ev.model_labels([f"m={folders['pred']}", f"m={folders['pred2']}"])
    assert ev.model_labels([str(folders["pred"])]) == {"restored": folders["pred"]}


def test_unwritable_report_folder_prints_the_scores_then_one_message(folders, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["eval", "--pred", str(folders["pred"]), "--gt", str(folders["gt"]), "--quiet",
                                 "--lq", str(folders["lq"]), "--report", str(blocker / "r")])  # fmt: skip
    assert result.exit_code == 1 and "restored" in result.output and "psnr" in result.output
    assert result.output.count("a-file is a file, not a folder") == 1 and "Traceback" not in result.output


def test_report_command_rebuilds_from_a_report_an_eval_json_and_a_run(folders, tmp_path):
    report = tmp_path / "run" / "report"
    ev_result = ev.evaluate(pred=folders["pred"], gt=folders["gt"], lq=folders["lq"], metrics="psnr",
                            report_dir=report, progress=False)  # fmt: skip
    write_eval_report(ev_result, report)
    ev.write_json(ev_result, tmp_path / "eval.json")

    # a report folder, elsewhere: the page again and its images copied
    result = runner.invoke(app, ["report", str(report), "-o", str(tmp_path / "copy"), "--title", "Again"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "copy" / "report.html")
    copy = json.loads((tmp_path / "copy" / "report.json").read_text())
    assert copy["title"] == "Again" and copy["images"] == json.loads((report / "report.json").read_text())["images"]
    assert_self_contained(tmp_path / "copy" / "report.html")

    # an eval JSON: the tables, no images
    result = runner.invoke(app, ["report", str(tmp_path / "eval.json"), "-o", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    tables = json.loads((tmp_path / "tables" / "report.json").read_text())
    assert len(tables["images"]) == 3 and all(not im["files"] for im in tables["images"])
    assert tables["summary"]["restored"]["psnr"] == pytest.approx(ev_result.summary["psnr"])
    assert any("holds no images" in n for n in tables["notes"])

    # a run directory: its config and curves, with the report it holds
    run = tmp_path / "run"
    (run / "config.yaml").write_text("train:\n  iters: 20\n")
    records = [{"step": 10, "loss": -20.0, "lr": 1e-3}, {"step": 20, "val/psnr": 25.0, "val/n_images": 3}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut by a kill\n')
    result = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "from-run")])
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((tmp_path / "from-run" / "report.json").read_text())
    assert rebuilt["run"]["config"].startswith("train:") and rebuilt["run"]["history"] == records
    assert len(rebuilt["images"]) == 3 and (tmp_path / "from-run" / "images" / "gt" / "a.png").is_file()
    assert 'id="curves"' in (tmp_path / "from-run" / "report.html").read_text()

    # a run without a report: the last validation's scores
    (report / "report.json").unlink()
    result = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "val-only")])
    assert result.exit_code == 0, result.output
    val_only = json.loads((tmp_path / "val-only" / "report.json").read_text())
    assert val_only["summary"]["restored"] == {"psnr": 25.0} and val_only["n_images"] == 3


def test_report_of_a_run_skips_metrics_lines_that_are_not_utf8_json_or_numbers(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  iters: 30\n")
    good = [{"step": 10, "loss": -20.0, "lr": 1e-3}, {"step": 20, "val/psnr": 25.0, "val/n_images": 3}]
    lines = [json.dumps(r).encode() for r in good] + [
        '{"step": 25, "loss": -21.0, "note": "caf\u00e9"}'.encode("latin-1"),  # another encoding: skipped
        json.dumps({"step": "ten", "loss": "ten", "lr": True}).encode(),  # no numbers: nothing of it drawn
        json.dumps({"step": 30, "val/psnr": "ten", "val/n_images": "3"}).encode(),  # no validation scores
    ]
    (run / "metrics.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["summary"]["restored"] == {"psnr": 25.0} and data["n_images"] == 3  # the last good validation
    assert data["sources"] == {"validation at step": "20"}
    assert data["run"]["history"] == good


def test_names_and_titles_cannot_break_out_of_the_page(tmp_path):
    from nafrestore.report.page import assemble, write_page

    rows = [{"name": "</script><script>alert(1)</script>", "psnr": 30.0}]
    data = assemble([("<b>m</b>", {"psnr": 30.0}, rows)], input_summary=None, n_images=1, settings={},
                    title="</title><script>alert(2)</script>")  # fmt: skip
    text = write_page(data, tmp_path).read_text()
    assert "alert(1)</script>" not in text and "<script>alert(2)" not in text and "<b>m</b>" not in text
    assert text.count("<script") == 2  # the data and the code
    assert json.loads((tmp_path / "report.json").read_text())["images"][0]["name"] == rows[0]["name"]


def test_report_command_errors(folders, tmp_path):
    result = runner.invoke(app, ["report", str(folders["gt"]), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "neither a report folder" in result.output
    (tmp_path / "x.json").write_text("{not json")
    result = runner.invoke(app, ["report", str(tmp_path / "x.json"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "Cannot read" in result.output and "Traceback" not in result.output
    # a report whose images are gone says which file is missing
    report = tmp_path / "rep"
    write_eval_report(ev.evaluate(pred=folders["pred"], gt=folders["gt"], metrics="psnr", report_dir=report,
                                  progress=False), report)  # fmt: skip
    (report / "images" / "gt" / "a.png").unlink()
    with pytest.raises(DataError, match="a.png"):
        build_report(report, tmp_path / "elsewhere")


def _set(path: str, value):
    """A change to report data: ``value`` at the dotted ``path`` (list indices as numbers)."""

    def change(data: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for key in parents:
            data = data[key]
        data[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        (_set("images", "notalist"), "images", '"notalist", not a list'),
        (_set("metrics", None), "metrics", "null, not a list"),
        (_set("images.1.scores.restored.psnr", "abc"), "images[1].scores.restored.psnr", '"abc", not a number'),
        (_set("summary.input.psnr", [1]), "summary.input.psnr", "[1], not a number"),
        (_set("views.0.kind", "other"), "views[0].kind", '"other", not "input" or "model" or "gt"'),
        (_set("metrics.0.higher_is_better", "yes"), "metrics[0].higher_is_better", '"yes", not true or false'),
        (_set("images.0.files.gt.full", "../../secret.png"), "images[0].files.gt.full", "not a relative path"),
        (_set("images.0.width", -3), "images[0].width", "-3, not a whole number of at least 1"),
        (_set("notes", [3]), "notes[0]", "3, not a string"),
        (_set("run", {"history": [{"step": "x"}]}), "run.history[0].step", '"x", not a number'),
        (_set("version", "1"), "version", '"1", not a whole number'),
    ],
)
def test_a_bad_report_json_is_refused_naming_the_file_and_the_field(folders, tmp_path, change, field, expected):
    report = tmp_path / "rep"
    write_eval_report(ev.evaluate(pred=folders["pred"], gt=folders["gt"], lq=folders["lq"], metrics="psnr",
                                report_dir=report, progress=False), report)  # fmt: skip
    data = json.loads((report / "report.json").read_text())
    change(data)
    (report / "report.json").write_text(json.dumps(data))
    result = runner.invoke(app, ["report", str(report), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {report / 'report.json'}: {field} is ")
    assert expected in result.stderr and "Traceback" not in result.output and result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_report_json_of_a_newer_version_or_a_bad_eval_json_is_refused(folders, tmp_path):
    report = tmp_path / "rep"
    write_eval_report(ev.evaluate(pred=folders["pred"], gt=folders["gt"], metrics="psnr", report_dir=report,
                                progress=False), report)  # fmt: skip
    data = json.loads((report / "report.json").read_text())
    (report / "report.json").write_text(json.dumps({**data, "version": 2}))
    result = runner.invoke(app, ["report", str(report), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"{report / 'report.json'} is a report of version 2, written by a newer nafrestore" in result.stderr

    for raw, field in (({"summary": {"psnr": "abc"}}, "summary.psnr"), ({"models": []}, "models"),
                       ({"models": {"a": {"summary": {}, "images": [{"name": "x", "psnr": "1"}]}}},
                        "models.a.images[0].psnr"),
                       ({"summary": {}, "settings": {"metrics": "psnr"}}, "settings.metrics")):  # fmt: skip
        (tmp_path / "eval.json").write_text(json.dumps(raw))
        result = runner.invoke(app, ["report", str(tmp_path / "eval.json"), "-o", str(tmp_path / "out")])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {tmp_path / 'eval.json'}: {field} is "), result.stderr
    assert not (tmp_path / "out").exists()


def test_eval_of_a_run_puts_its_curves_and_config_in_the_report(tmp_path):
    run, _ = tiny_run(tmp_path)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "loss": -10.0, "lr": 1e-3}) + "\n")
    result = runner.invoke(app, ["eval", str(run), "--metrics", "psnr", "--report", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["run"]["name"] == "run" and "model:" in data["run"]["config"]
    assert data["run"]["history"] == [{"step": 5, "loss": -10.0, "lr": 0.001}]
    assert data["sources"]["checkpoint"].endswith("best.pt") and len(data["images"]) == 2
    assert set(data["images"][0]["files"]) == {"input", "restored", "gt"}
