"""Export bundles: the files and manifest `imgclf export` writes, the parity checks, and `imgclf verify`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_image
from imgclf.bundle import BUNDLE_FILE, read_bundle
from imgclf.cli.main import app
from imgclf.errors import ConfigError, DatasetError, ModelError
from imgclf.export import ExportOptions, export_bundle, verify_bundle
from imgclf.export.parity import FLOAT_TOLERANCE, accuracy_change, compare
from tiny_run import CLASSES, IMAGE_SIZE, make_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLF_CACHE_DIR", str(root / "cache"))
        return make_run(root)


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bundle with every float format, then an int8 model added by a second export."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-bundle"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLF_CACHE_DIR", str(run_dir.parent.parent / "cache"))
        export_bundle(run_dir, out, ExportOptions(formats=["keras", "savedmodel", "tflite"], name="tiny"))
        export_bundle(run_dir, out, ExportOptions(formats=["tflite"], quantize="int8"))
    return out


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / BUNDLE_FILE).read_text("utf-8"))


def _artifact(bundle: Path, key: str) -> dict:
    return next(entry for entry in _manifest(bundle)["artifacts"] if entry["key"] == key)


# --------------------------------------------------------------------------------------------
# The bundle and its manifest
# --------------------------------------------------------------------------------------------


def test_bundle_holds_every_format(bundle):
    assert (bundle / "model.keras").is_file()
    assert (bundle / "savedmodel" / "tiny" / "1" / "saved_model.pb").is_file()
    assert (bundle / "model.tflite").is_file()
    assert (bundle / "model_int8.tflite").is_file()
    keys = [entry["key"] for entry in _manifest(bundle)["artifacts"]]
    assert keys == ["keras", "savedmodel", "tflite", "tflite-int8"]


def test_manifest_describes_model_and_run(bundle, run_dir):
    manifest = _manifest(bundle)
    assert manifest["classes"] == CLASSES
    assert (manifest["input"]["height"], manifest["input"]["width"]) == IMAGE_SIZE
    assert manifest["input"]["channel_order"] == "RGB"
    assert manifest["input"]["value_range"] == [0, 255]
    steps = {step["op"]: step for step in manifest["preprocessing_in_graph"]}
    assert steps["Resizing"]["height"] == IMAGE_SIZE[0] and steps["Resizing"]["antialias"] is True
    assert steps["Rescaling"]["scale"] == pytest.approx(1 / 255)
    record = json.loads((run_dir / "run.json").read_text())
    assert manifest["training"]["data"]["manifest_sha256"] == record["data"]["manifest_sha256"]
    assert set(manifest["training"]["data"]["split_files_sha256"]) == {"train.csv", "val.csv", "test.csv"}
    assert manifest["training"]["config"]["seed"] == 7
    assert manifest["evaluation"]["test"]["accuracy"] >= 0.9
    assert set(manifest["versions"]["export"]) >= {"imgclf", "tensorflow", "keras"}
    assert manifest["created"][:2] == "20"


def test_manifest_records_calibration_temperature(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "calibration.json").write_text(json.dumps({"temperature": 1.5, "fitted_on": "val"}), "utf-8")
    manifest = export_bundle(run, tmp_path / "bundle", ExportOptions(formats=["keras"]))
    assert manifest["training"]["calibration"]["temperature"] == 1.5
    assert _manifest(tmp_path / "bundle")["training"]["calibration"]["fitted_on"] == "val"


def test_float_formats_pass_parity_within_tolerance(bundle):
    for key in ("keras", "savedmodel", "tflite"):
        parity = _artifact(bundle, key)["parity"]
        assert parity["passed"], key
        assert parity["max_abs_diff"] <= FLOAT_TOLERANCE, key
        assert parity["n_images"] == 9, key


def test_int8_records_agreement_and_accuracy(bundle):
    entry = _artifact(bundle, "tflite-int8")
    assert entry["quantize"] == "int8"
    assert entry["parity"]["top1_agreement"] >= 0.99
    assert entry["accuracy"]["split"] == "val"
    assert entry["accuracy"]["n_images"] == 9
    assert entry["accuracy"]["change_points"] >= -1.0


def test_artifact_hashes_match_files(bundle):
    from imgclf.bundle import sha256_of

    for entry in _manifest(bundle)["artifacts"]:
        assert sha256_of(bundle / entry["path"]) == entry["sha256"], entry["key"]


def test_keras_file_loads_in_safe_mode(bundle):
    import keras

    model = keras.saving.load_model(bundle / "model.keras", safe_mode=True, compile=False)
    assert model.output_shape[-1] == len(CLASSES)


# --------------------------------------------------------------------------------------------
# SavedModel signatures
# --------------------------------------------------------------------------------------------


def test_savedmodel_serves_bytes_and_pixels_alike(bundle, run_dir):
    import tensorflow as tf

    from imgclf.imageio import load_image

    image_path = sorted((run_dir.parent.parent / "photos" / "dog").glob("*.png"))[0]
    loaded = tf.saved_model.load(str(bundle / "savedmodel" / "tiny" / "1"))
    assert set(loaded.signatures) == {"serving_default", "serve_pixels"}
    from_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant([image_path.read_bytes()]))
    pixels = load_image(image_path, IMAGE_SIZE).astype(np.float32)[np.newaxis]
    from_pixels = loaded.signatures["serve_pixels"](images=tf.constant(pixels))
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(), from_pixels["probabilities"].numpy(), atol=1e-6)
    assert from_bytes["class_name"].numpy()[0].decode() == "dog"


def test_savedmodel_pixels_accept_any_size(bundle):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(bundle / "savedmodel" / "tiny" / "1"))
    large = np.full((2, 40, 30, 3), 200.0, np.float32)
    probabilities = loaded.signatures["serve_pixels"](images=tf.constant(large))["probabilities"].numpy()
    assert probabilities.shape == (2, len(CLASSES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Rejections: nothing is written when a check fails
# --------------------------------------------------------------------------------------------


def test_parity_failure_writes_nothing(run_dir, tmp_path, monkeypatch):
    from imgclf.runtimes import LiteRTRuntime

    original = LiteRTRuntime.predict
    monkeypatch.setattr(LiteRTRuntime, "predict", lambda self, images: original(self, images) * 0.9 + 0.01)
    out = tmp_path / "broken"
    with pytest.raises(ModelError, match=r"tflite failed the parity check on 9 images: max abs probability difference"):
        export_bundle(run_dir, out, ExportOptions(formats=["tflite"]))
    assert not out.exists()


def test_accuracy_drop_rejects_int8_with_both_accuracies(run_dir, tmp_path, monkeypatch):
    from imgclf.export import core

    def dropped(reference, candidate, sample, max_drop_points):
        result = accuracy_change(reference, candidate, sample, max_drop_points)
        return {**result, "exported": result["keras"] - 0.25, "change_points": -25.0, "passed": False}

    monkeypatch.setattr(core, "accuracy_change", dropped)
    result = runner.invoke(app, ["export", str(run_dir), "--format", "tflite", "--quantize", "int8",
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 6
    assert "tflite-int8 rejected: val top-1 accuracy 0.7500 against 1.0000" in result.output
    assert "--max-accuracy-drop 1" in result.output
    assert not (tmp_path / "b").exists()


def test_export_into_bundle_of_other_model_is_rejected(run_dir, bundle, tmp_path):
    other = tmp_path / "other-run"
    shutil.copytree(run_dir, other)
    import keras

    model = keras.saving.load_model(other / "model.keras", safe_mode=True)
    model.get_layer("probabilities").bias.assign(np.ones(len(CLASSES), np.float32))
    model.save(other / "model.keras")
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with pytest.raises(ModelError, match="holds a bundle of another model"):
        export_bundle(other, copy, ExportOptions(formats=["keras"]))


def test_export_into_unrelated_folder_is_rejected(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="is not empty and holds no imgclf.json"):
        export_bundle(run_dir, tmp_path, ExportOptions(formats=["keras"]))


@pytest.mark.parametrize(("options", "message"), [
    ({"formats": ["onnx"]}, "--format onnx: expected one or more of keras, savedmodel, tflite"),
    ({"formats": ["keras"], "quantize": "int8"}, "--quantize int8 applies to TensorFlow Lite only"),
    ({"formats": ["tflite"], "quantize": "int4"}, "--quantize 'int4': expected one of dynamic, float16, int8"),
    ({"formats": ["savedmodel"], "name": "my model"}, "--name 'my model'"),
    ({"formats": ["savedmodel"], "version": 0}, "--version 0"),
])
def test_export_options_are_validated(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ExportOptions(**options)


def test_cli_quantize_without_tflite_exits_with_config_code(run_dir, tmp_path):
    result = runner.invoke(app, ["export", str(run_dir), "--format", "keras", "--quantize", "float16",
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 3
    assert "--quantize float16 applies to TensorFlow Lite only; add --format tflite" in result.output


def test_export_of_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "b")])
    assert result.exit_code == 6
    assert "not a finished run directory (no model.keras)" in result.output


# --------------------------------------------------------------------------------------------
# Parity arithmetic
# --------------------------------------------------------------------------------------------


def test_compare_float_fails_above_tolerance():
    reference = np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)
    assert compare(reference, reference + 5e-5, quantized=False)["passed"]
    assert not compare(reference, reference + 5e-4, quantized=False)["passed"]


def test_compare_quantized_counts_top1_agreement():
    reference = np.tile(np.array([[0.9, 0.1]], np.float32), (100, 1))
    candidate = reference.copy()
    candidate[0] = [0.1, 0.9]
    assert compare(reference, candidate, quantized=True)["top1_agreement"] == pytest.approx(0.99)
    assert compare(reference, candidate, quantized=True)["passed"]
    candidate[1] = [0.1, 0.9]
    assert not compare(reference, candidate, quantized=True)["passed"]


# --------------------------------------------------------------------------------------------
# imgclf verify, in a fresh process
# --------------------------------------------------------------------------------------------


def _imgclf(*args: str) -> subprocess.CompletedProcess:
    """Run the imgclf command line in a new Python process."""
    return subprocess.run([sys.executable, "-c", "from imgclf.cli.main import run; run()", *args],
                          capture_output=True, text=True, timeout=300)


def test_verify_passes_in_fresh_process(bundle):
    completed = _imgclf("verify", str(bundle), "--json")
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["keras_safe_mode"] is True
    assert report["n_images"] == 9
    assert [item["key"] for item in report["artifacts"]] == ["keras", "savedmodel", "tflite", "tflite-int8"]
    assert all(item["parity"]["passed"] and item["sha256_ok"] for item in report["artifacts"])


def test_verify_reports_changed_file(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with open(copy / "model.tflite", "ab") as handle:
        handle.write(b"\0")
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 6
    assert "tflite failed verification" in result.output


def test_verify_without_parity_images_asks_for_images(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = _manifest(copy)
    for item in manifest["parity_sample"]["images"]:
        item["path"] = str(tmp_path / "moved" / Path(item["path"]).name)
    (copy / BUNDLE_FILE).write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(DatasetError, match="pass --images"):
        verify_bundle(copy)
    images = [str(make_image(tmp_path / "own" / f"{index}.png", (200, 40, 40), seed=index)) for index in range(3)]
    report = verify_bundle(copy, images)
    assert report["passed"]
    assert report["n_images"] == 3


# --------------------------------------------------------------------------------------------
# Imports: the package root and the new commands' help stay free of TensorFlow
# --------------------------------------------------------------------------------------------


def test_import_imgclf_does_not_import_tensorflow():
    code = "import sys, imgclf; print(callable(imgclf.load), 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.split() == ["True", "False", "False"], completed.stderr


@pytest.mark.parametrize("command", ["export", "verify"])
def test_help_of_new_commands_does_not_import_tensorflow(command):
    code = (
        "import sys\n"
        "from imgclf.cli.main import app\n"
        "try:\n"
        f"    app([{command!r}, '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print('tensorflow' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.stdout.strip().splitlines()[-1] == "False", completed.stderr


def test_read_bundle_rejects_newer_format(bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = _manifest(copy)
    manifest["format_version"] = 99
    (copy / BUNDLE_FILE).write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ModelError, match="format_version 99 is not supported"):
        read_bundle(copy)
