"""Hard inputs found by trying the tool as a new user: manifests, given splits, configs and caches."""

import json
import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_dataset, make_image, write_config
from imgclf.cli.main import app
from imgclf.config import load_config, read_yaml
from imgclf.errors import ConfigError, DatasetError
from imgclf.scan import scan_dataset
from imgclf.splitting import parse_ratios, split_scan

runner = CliRunner()


def _manifest(tmp_path, lines, encoding="utf-8", name="manifest.csv"):
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


def _photo_rows(tmp_path, per_class=4):
    root = make_dataset(tmp_path / "photos", per_class=per_class)
    return [f"{path},{path.parent.name}" for path in sorted(root.rglob("*.*"))]


def test_manifest_with_byte_order_mark_is_read(tmp_path):
    path = _manifest(tmp_path, ["path,label"] + _photo_rows(tmp_path), encoding="utf-8-sig")
    assert len(scan_dataset(path).records) == 12


def test_manifest_in_latin1_names_encoding(tmp_path):
    path = _manifest(tmp_path, ["path,label", "café.png,chat"], encoding="latin-1")
    with pytest.raises(DatasetError, match=r"manifest\.csv: not UTF-8 text"):
        scan_dataset(path)


def test_manifest_unknown_split_value_is_rejected(tmp_path):
    rows = [row + ",dev" for row in _photo_rows(tmp_path)]
    path = _manifest(tmp_path, ["path,label,split"] + rows)
    with pytest.raises(DatasetError, match=r"line 2: split 'dev' is not one of train, val"):
        scan_dataset(path)


def test_manifest_split_without_train_rows_is_rejected(tmp_path):
    rows = [row + ",test" for row in _photo_rows(tmp_path)]
    path = _manifest(tmp_path, ["path,label,split"] + rows)
    with pytest.raises(DatasetError, match=r"names no train rows"):
        scan_dataset(path)


def test_manifest_repeated_rows_are_used_once(tmp_path):
    rows = _photo_rows(tmp_path, per_class=6)
    path = _manifest(tmp_path, ["path,label"] + rows + rows[:2] + [rows[2].rsplit(",", 1)[0] + ",dog"])
    split = split_scan(scan_dataset(path), seed=1)
    reasons = sorted(issue["reason"] for issue in split.report["skipped"])
    assert reasons == ["label_conflict", "listed_twice", "listed_twice"]
    assert split.report["images_used"] == 17


def test_manifest_invalid_classes_json_is_reported(tmp_path):
    path = _manifest(tmp_path, ["path,label"] + _photo_rows(tmp_path))
    (tmp_path / "classes.json").write_text("[oops")
    with pytest.raises(DatasetError, match=r"classes\.json: invalid JSON"):
        scan_dataset(path)


def test_given_split_with_class_missing_from_train_is_rejected(tmp_path):
    base = tmp_path / "given"
    make_dataset(base / "train", per_class=3, classes={"a": (200, 0, 0), "b": (0, 200, 0)})
    make_dataset(base / "val", per_class=2, classes={"a": (200, 0, 0), "b": (0, 200, 0), "c": (0, 0, 200)}, first_seed=40)
    with pytest.raises(DatasetError, match=r"'c' has no train images"):
        split_scan(scan_dataset(base))


def test_class_folders_named_like_splits_stay_classes(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3,
                        classes={"train": (200, 0, 0), "test": (0, 200, 0), "car": (0, 0, 200)})
    scan = scan_dataset(root)
    assert scan.class_folders == ["car", "test", "train"]
    assert scan.split_of == {}


def test_symlinked_image_keeps_its_dataset_path(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3)
    target = make_image(tmp_path / "outside" / "real.png", (9, 99, 9), seed=77)
    os.symlink(target, root / "cat" / "linked.png")
    paths = [record.path for record in scan_dataset(root).records]
    assert str(root / "cat" / "linked.png") in paths
    assert str(target) not in paths


@pytest.mark.parametrize("text", ["nan,0.5,0.5", "inf,0,0"])
def test_parse_ratios_rejects_non_finite(text):
    with pytest.raises(DatasetError, match=r"finite"):
        parse_ratios(text)


def test_config_not_utf8_is_reported(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"# caf\xe9\ndata: {path: x}\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml: not UTF-8 text"):
        read_yaml(path)


def test_config_duplicate_key_is_rejected(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("data:\n  path: a\ndata:\n  path: b\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: invalid YAML at line 3.*'data' is given twice"):
        read_yaml(path)


def test_config_numeric_folder_name_is_a_string(tmp_path):
    path = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "runs")
    assert load_config(path, ["data.path=2024", "output.name=2024"]).data.path == "2024"


def test_config_image_size_too_small_for_simple_cnn(tmp_path):
    path = write_config(tmp_path / "c.yaml", tmp_path, tmp_path / "runs", model={"name": "simple_cnn"})
    with pytest.raises(ConfigError, match=r"data\.image_size \[8, 8\] is too small for simple_cnn; use at least 10"):
        load_config(path, ["data.image_size=8"])


def test_train_with_missing_data_leaves_no_run_directory(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "nowhere", tmp_path / "runs")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 4
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_interrupted_decode_leaves_no_partial_cache(tmp_path, monkeypatch):
    import imgclf.pipeline as pipeline

    root = make_dataset(tmp_path / "photos", per_class=2)
    rows = sorted((str(path), path.parent.name) for path in root.rglob("*.*"))

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "load_image", interrupt)
    with pytest.raises(KeyboardInterrupt):
        pipeline.decode_split(rows, ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*")) == []


def test_fashion_export_checks_every_file_before_writing(tmp_path):
    import gzip
    import struct

    from imgclf.datasets import FASHION_MNIST_FILES, export_fashion_mnist

    source = tmp_path / "idx"
    source.mkdir()
    for (images_name, labels_name), count in zip(FASHION_MNIST_FILES.values(), (5, 3)):
        with gzip.open(source / images_name, "wb") as handle:
            handle.write(struct.pack(">BBBBIII", 0, 0, 8, 3, count, 28, 28) + bytes(count * 784))
        with gzip.open(source / labels_name, "wb") as handle:
            handle.write(struct.pack(">BBBBI", 0, 0, 8, 1, count) + bytes(count))
    (source / "t10k-images-idx3-ubyte.gz").write_bytes(b"corrupt")
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz"):
        export_fashion_mnist(tmp_path / "out", str(source))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluate_refuses_split_changed_after_training(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=8)
    split_dir = tmp_path / "split"
    assert runner.invoke(app, ["split", str(root), "--out", str(split_dir), "--seed", "1"]).exit_code == 0
    config = write_config(tmp_path / "c.yaml", split_dir, tmp_path / "runs", output={"name": "r"})
    assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
    assert runner.invoke(app, ["split", str(root), "--out", str(split_dir), "--seed", "7"]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(tmp_path / "runs" / "r")])
    assert result.exit_code == 4
    assert "the split changed after r was trained" in result.output
    metrics_csv = (tmp_path / "runs" / "r" / "metrics.csv").read_text().splitlines()
    assert metrics_csv[1].startswith("1,scratch,")
