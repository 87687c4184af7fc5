"""Integration tests on the real photo datasets in ../shared/datasets (skipped where absent)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_path, write_config
from imgclf.cli.main import app
from imgclf.imageio import decode_image
from imgclf.scan import scan_dataset
from imgclf.splitting import split_scan

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_sign_language_digits_scan_finds_every_image():
    root = shared_path("datasets", "sign-language-digits")
    scan = scan_dataset(root)
    assert len(scan.records) == 2062
    assert scan.class_folders == [str(digit) for digit in range(10)]
    assert scan.skipped == []
    ignored_names = sorted(issue.path.rsplit("/", 1)[1] for issue in scan.ignored)
    assert ignored_names == ["LICENSE", "README.md"]


def test_sign_language_digits_large_exif_photos_decode_upright():
    root = shared_path("datasets", "sign-language-digits")
    large = [record for record in scan_dataset(root).records if record.width > 1000]
    assert len(large) == 3
    for record in large:
        pixels = decode_image(record.path)
        assert pixels.shape[2] == 3
        assert pixels.dtype == np.uint8


def test_hymenoptera_is_taken_as_already_split():
    root = shared_path("datasets", "hymenoptera")
    split = split_scan(scan_dataset(root))
    assert split.classes == ["ants", "bees"]
    assert split.report["already_split"] is True
    assert split.report["totals"]["train"] + split.report["totals"]["val"] == 397 + 1 - len(split.report["skipped"])
    assert split.report["totals"]["test"] == 0


def test_hymenoptera_palette_gif_placeholder_decodes_to_rgb():
    path = shared_path("datasets", "hymenoptera", "train", "ants", "imageNotFound.gif")
    pixels = decode_image(path)
    assert pixels.ndim == 3
    assert pixels.shape[2] == 3


@pytest.mark.slow
def test_sign_language_digits_end_to_end(tmp_path):
    root = shared_path("datasets", "sign-language-digits")
    split_dir = tmp_path / "split"
    assert runner.invoke(app, ["split", str(root), "--out", str(split_dir)]).exit_code == 0
    config = write_config(tmp_path / "c.yaml", split_dir, tmp_path / "runs",
                          data={"image_size": 32}, model={"name": "simple_cnn"},
                          train={"epochs": 2, "batch_size": 32, "learning_rate": 0.002}, output={"name": "signs"})
    trained = runner.invoke(app, ["train", "--config", str(config)])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "runs" / "signs"), "--json"])
    metrics = json.loads(evaluated.stdout)
    assert metrics["n_images"] == 310
    assert metrics["accuracy"] > 0.3  # chance is 0.1
    image = next((root / "7").glob("*.JPG"))
    predicted = runner.invoke(app, ["predict", str(tmp_path / "runs" / "signs"), str(image), "--json"])
    assert predicted.exit_code == 0
    assert json.loads(predicted.stdout)["class"] in [str(digit) for digit in range(10)]
