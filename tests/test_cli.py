import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_dataset, make_image, write_config
from imgclf.cli.main import app

runner = CliRunner()
SUBCOMMANDS = [[], ["split"], ["import"], ["check"], ["runs"], ["runs", "list"], ["augment"], ["train"], ["evaluate"], ["predict"], ["datasets"], ["datasets", "export"]]


@pytest.mark.parametrize("args", SUBCOMMANDS, ids=lambda args: " ".join(args) or "main")
def test_help_does_not_import_tensorflow(args):
    code = (
        "import sys\n"
        "from imgclf.cli.main import app\n"
        "try:\n"
        f"    app({args + ['--help']!r})\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"


def test_split_command_writes_manifests(dataset, tmp_path):
    out = tmp_path / "split"
    result = runner.invoke(app, ["split", str(dataset), "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    for name in ("train.csv", "val.csv", "test.csv", "classes.json", "split_report.json"):
        assert (out / name).is_file()
    assert json.loads((out / "classes.json").read_text()) == ["cat", "dog", "fish"]
    assert "24 images in 3 classes" in result.output


def test_split_command_json_report(dataset, tmp_path):
    result = runner.invoke(app, ["split", str(dataset), "--out", str(tmp_path / "s"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["totals"]["train"] + report["totals"]["val"] + report["totals"]["test"] == 24


def test_split_command_missing_folder_exits_with_dataset_code(tmp_path):
    result = runner.invoke(app, ["split", str(tmp_path / "absent"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 4
    assert "absent: dataset folder not found" in result.output


def test_split_command_bad_ratios_exit_code(dataset, tmp_path):
    result = runner.invoke(app, ["split", str(dataset), "--out", str(tmp_path / "s"), "--ratios", "0.9,0.2,0.1"])
    assert result.exit_code == 4
    assert "sum to 1.2" in result.output


def test_train_rejects_misspelled_override_with_config_code(dataset, tmp_path):
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    result = runner.invoke(app, ["train", "--config", str(config), "train.epoch=3"])
    assert result.exit_code == 3
    assert "did you mean 'train.epochs'" in result.output


def test_datasets_export_digits_writes_all_scans(tmp_path):
    result = runner.invoke(app, ["datasets", "export", "digits", str(tmp_path / "digits")])
    assert result.exit_code == 0, result.output
    files = list((tmp_path / "digits").rglob("*.png"))
    assert len(files) == 1797
    assert sorted(path.name for path in (tmp_path / "digits").iterdir()) == [str(d) for d in range(10)]


def test_augment_preview_writes_png(dataset, tmp_path):
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs",
                          augmentation={"rotation_degrees": 30, "horizontal_flip": True, "zoom": 0.2,
                                        "shear_degrees": 10, "width_shift": 0.1})
    preview = tmp_path / "grid.png"
    result = runner.invoke(app, ["augment", "--config", str(config), "--preview", str(preview),
                                 "--images", "3", "--variants", "4"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    with Image.open(preview) as image:
        assert image.size[0] > image.size[1]


@pytest.mark.slow
def test_end_to_end_split_train_evaluate_predict(dataset, tmp_path):
    split_dir = tmp_path / "split"
    assert runner.invoke(app, ["split", str(dataset), "--out", str(split_dir)]).exit_code == 0
    config = write_config(tmp_path / "c.yaml", split_dir, tmp_path / "runs", train={"epochs": 2})

    trained = runner.invoke(app, ["train", "--config", str(config), "output.name=first"])
    assert trained.exit_code == 0, trained.output
    run_dir = Path(trained.stdout.strip().splitlines()[-1])
    assert run_dir == tmp_path / "runs" / "first"
    for name in ("model.keras", "classes.json", "config.yaml", "run.json", "history.json", "metrics.csv"):
        assert (run_dir / name).is_file(), name
    record = json.loads((run_dir / "run.json").read_text())
    assert record["seed"] == 7
    assert set(record["versions"]) >= {"imgclf", "tensorflow", "keras"}
    assert len(record["data"]["manifest_sha256"]) == 64

    evaluated = runner.invoke(app, ["evaluate", str(run_dir), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert metrics["n_images"] == 3
    assert set(metrics["per_class"]) == {"cat", "dog", "fish"}
    assert (run_dir / "evaluation" / "test_confusion_matrix.png").is_file()

    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    predicted = runner.invoke(app, ["predict", str(run_dir), str(dataset / "cat" / "cat_0.jpg"),
                                    str(dataset / "dog"), str(junk), "--json", "--top-k", "2"])
    assert predicted.exit_code == 5
    lines = [json.loads(line) for line in predicted.stdout.strip().splitlines()]
    assert len(lines) == 10
    assert lines[0]["class"] in {"cat", "dog", "fish"}
    assert len(lines[0]["top_k"]) == 2
    assert 0.0 <= lines[0]["confidence"] <= 1.0
    assert lines[-1]["reason"] == "not_an_image"


@pytest.mark.slow
def test_train_on_dataset_root_splits_on_the_fly(dataset, tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "unused", tmp_path / "runs")
    result = runner.invoke(app, ["train", "--config", str(config), f"data.path={dataset}", "output.name=fly"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "fly"
    assert (run_dir / "split" / "train.csv").is_file()
    resolved = (run_dir / "config.yaml").read_text()
    assert str(dataset) in resolved


@pytest.mark.slow
def test_train_learns_separable_colours(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=16)
    config = write_config(tmp_path / "c.yaml", root, tmp_path / "runs",
                          train={"epochs": 6, "learning_rate": 0.01}, output={"name": "colours"})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "runs" / "colours"), "--json"])
    assert json.loads(evaluated.stdout)["accuracy"] >= 0.9


def test_evaluate_rejects_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 6
    assert "not a finished run directory" in result.output


def test_predict_rejects_missing_model(tmp_path):
    image = make_image(tmp_path / "a.png", (1, 2, 3))
    result = runner.invoke(app, ["predict", str(tmp_path / "nomodel"), str(image)])
    assert result.exit_code == 6
    assert "model not found" in result.output


def test_predict_rejects_glob_without_match(tmp_path):
    result = runner.invoke(app, ["predict", str(tmp_path), str(tmp_path / "*.jpg")])
    assert result.exit_code == 4
    assert "matches no file" in result.output
