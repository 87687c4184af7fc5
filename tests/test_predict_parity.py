"""Prediction parity and streaming.

The command line and the Python API must give the same classes and probabilities for the same
file, for every model format, on hard inputs. Large inputs stream with bounded read-ahead.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import imgclf
from conftest import make_image
from imgclf.cli.main import app
from imgclf.export import ExportOptions, export_bundle
from imgclf.export.parity import FLOAT_TOLERANCE
from imgclf.imageio import decode_image
from robustness_corpus import Corpus, corpus  # noqa: F401  (`corpus` is a fixture)
from tiny_run import CLASSES, make_run

runner = CliRunner()

# Corpus files by what makes them hard: (case id, file name ending).
HARD_FILES = {
    "transparency_rgba": ("C05", "rgba.png"),
    "transparency_grey_alpha": ("C06", "gray_alpha_LA.png"),
    "transparent_palette": ("C06", "palette_P.png"),
    "exif_orientation": ("C08", "rotated_6.jpg"),
    "cmyk_jpeg": ("C04", "cmyk.jpg"),
    "greyscale_jpeg": ("C06", "gray_L.jpg"),
    "odd_size_131x97": ("C22", "parity_noise.png"),
    "webp": ("C10", "a.webp"),
    "tiff": ("C10", "b.tif"),
}
# Model targets inside the bundle fixture, by the runtime they select; None is the run directory.
TARGETS = {
    "run_keras": None,
    "bundle_default_tflite": ".",
    "bundle_keras": "model.keras",
    "bundle_savedmodel": "savedmodel/tiny/1",
    "bundle_int8": "model_int8.tflite",
}


@pytest.fixture(scope="module")
def run_and_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("parity_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLF_CACHE_DIR", str(root / "cache"))
        run = make_run(root)
        bundle = root / "bundle"
        export_bundle(run, bundle, ExportOptions(formats=["keras", "savedmodel", "tflite"], name="tiny"))
        export_bundle(run, bundle, ExportOptions(formats=["tflite"], quantize="int8"))
    return run, bundle


def _target(run_and_bundle, name: str) -> str:
    run, bundle = run_and_bundle
    relative = TARGETS[name]
    return str(run if relative is None else bundle / relative)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_png_rgb16(path: Path, pixels: np.ndarray) -> Path:
    """Write a 48-bit RGB PNG (16 bits per sample), which Pillow reads but cannot write."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
                     + _png_chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def hard_files(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """The corpus files above plus two 16-bit PNGs made here: grey (I;16) and 48-bit RGB."""
    files = {name: corpus.path(case, ending) for name, (case, ending) in HARD_FILES.items()}
    folder = tmp_path_factory.mktemp("sixteen_bit")
    ramp = np.linspace(0, 65535, 24 * 20).reshape(20, 24).astype(np.uint16)
    grey = folder / "grey16.png"
    Image.fromarray(ramp).save(grey)
    with Image.open(grey) as image:
        assert image.mode == "I;16"
    files["grey_16_bit_png"] = grey
    colour = np.stack([ramp, ramp[::-1], np.full_like(ramp, 40000)], axis=-1)
    files["rgb_48_bit_png"] = write_png_rgb16(folder / "rgb48.png", colour)
    return files


def _cli_predictions(target: str, paths: list[Path]) -> list[dict]:
    result = runner.invoke(app, ["predict", target, *map(str, paths), "--json", "--top-k", str(len(CLASSES)),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def _as_vector(top_k: list[dict]) -> np.ndarray:
    by_class = {item["class"]: item["probability"] for item in top_k}
    return np.array([by_class[name] for name in CLASSES])


# --------------------------------------------------------------------------------------------
# The command line and the Python API
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target_name", list(TARGETS))
def test_cli_and_api_agree_on_hard_files(run_and_bundle, hard_files, target_name):
    target = _target(run_and_bundle, target_name)
    paths = list(hard_files.values())
    from_cli = _cli_predictions(target, paths)
    from_api = imgclf.load(target).predict(paths)
    assert [item["path"] for item in from_cli] == [str(path) for path in paths]
    for cli_result, api_result, name in zip(from_cli, from_api, hard_files):
        assert cli_result["class"] == api_result.label, name
        np.testing.assert_allclose(_as_vector(cli_result["top_k"]), api_result.probabilities, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("target_name", ["run_keras", "bundle_default_tflite", "bundle_savedmodel"])
def test_api_arrays_match_files(run_and_bundle, hard_files, target_name):
    predictor = imgclf.load(_target(run_and_bundle, target_name))
    paths = list(hard_files.values())
    from_files = predictor.predict(paths)
    from_arrays = predictor.predict([decode_image(path) for path in paths])
    for file_result, array_result, name in zip(from_files, from_arrays, hard_files):
        assert file_result.label == array_result.label, name
        np.testing.assert_allclose(file_result.probabilities, array_result.probabilities, atol=1e-6, err_msg=name)


def test_api_single_file_matches_batch(run_and_bundle, hard_files):
    predictor = imgclf.load(_target(run_and_bundle, "bundle_default_tflite"))
    batch = predictor.predict(list(hard_files.values()))
    for result, (name, path) in zip(batch, hard_files.items()):
        [alone] = predictor.predict(path)
        np.testing.assert_allclose(alone.probabilities, result.probabilities, atol=1e-6, err_msg=name)


def test_float_formats_agree_on_hard_files(run_and_bundle, hard_files):
    paths = list(hard_files.values())
    reference = np.array([result.probabilities for result in imgclf.load(_target(run_and_bundle, "run_keras")).predict(paths)])
    for name in ("bundle_default_tflite", "bundle_keras", "bundle_savedmodel"):
        exported = np.array([result.probabilities for result in imgclf.load(_target(run_and_bundle, name)).predict(paths)])
        assert np.abs(exported - reference).max() <= FLOAT_TOLERANCE, name


def test_int8_keeps_top1_on_hard_files(run_and_bundle, hard_files):
    paths = list(hard_files.values())
    keras_labels = [result.label for result in imgclf.load(_target(run_and_bundle, "run_keras")).predict(paths)]
    int8_labels = [result.label for result in imgclf.load(_target(run_and_bundle, "bundle_int8")).predict(paths)]
    assert int8_labels == keras_labels


def test_tflite_matches_keras_on_224_noise(run_and_bundle, corpus):  # noqa: F811
    path = corpus.path("C34", "parity_224.png")
    [keras_result] = imgclf.load(_target(run_and_bundle, "run_keras")).predict(path)
    [tflite_result] = imgclf.load(_target(run_and_bundle, "bundle_default_tflite")).predict(path)
    assert np.abs(np.subtract(keras_result.probabilities, tflite_result.probabilities)).max() <= FLOAT_TOLERANCE


# --------------------------------------------------------------------------------------------
# Decoding rules reach every runtime
# --------------------------------------------------------------------------------------------


def test_exif_rotated_file_matches_upright_copy(run_and_bundle, hard_files, tmp_path):
    upright = tmp_path / "upright.png"
    Image.fromarray(decode_image(hard_files["exif_orientation"])).save(upright)
    with Image.open(hard_files["exif_orientation"]) as stored:
        assert stored.size[0] > stored.size[1]
    predictor = imgclf.load(_target(run_and_bundle, "bundle_default_tflite"))
    rotated_result, upright_result = predictor.predict([hard_files["exif_orientation"], upright])
    assert rotated_result.probabilities == upright_result.probabilities


def test_grey_16_bit_png_matches_rounded_8_bit(run_and_bundle, hard_files, tmp_path):
    with Image.open(hard_files["grey_16_bit_png"]) as image:
        values = np.asarray(image, dtype=np.float64)
    eight_bit = tmp_path / "grey8.png"
    Image.fromarray(np.rint(values / 257).astype(np.uint8)).save(eight_bit)
    predictor = imgclf.load(_target(run_and_bundle, "bundle_default_tflite"))
    sixteen_result, eight_result = predictor.predict([hard_files["grey_16_bit_png"], eight_bit])
    assert sixteen_result.probabilities == eight_result.probabilities


def test_transparent_png_is_composited_on_white(run_and_bundle, tmp_path):
    transparent = tmp_path / "clear.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(transparent)
    white = tmp_path / "white.png"
    Image.new("RGB", (20, 20), (255, 255, 255)).save(white)
    predictor = imgclf.load(_target(run_and_bundle, "bundle_default_tflite"))
    clear_result, white_result = predictor.predict([transparent, white])
    assert clear_result.probabilities == white_result.probabilities


# --------------------------------------------------------------------------------------------
# Streaming: bounded read-ahead, results written as they come, skipped files summarised
# --------------------------------------------------------------------------------------------


def test_predict_files_bounds_read_ahead(run_and_bundle, tmp_path):
    from imgclf.prediction import _BATCHES_AHEAD

    image = make_image(tmp_path / "one.png", (220, 40, 40))
    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield str(image)

    predictor = imgclf.load(_target(run_and_bundle, "bundle_default_tflite"))
    results = predictor.predict_files(endless(), top_k=1, batch_size=4)
    for _ in range(10):
        next(results)
    results.close()
    assert consumed <= 4 * (_BATCHES_AHEAD + 3)


def test_cli_writes_csv_and_summarises_skipped(run_and_bundle, tmp_path):
    folder = tmp_path / "in"
    for index in range(5):
        make_image(folder / f"{index}.png", (40, 220, 40), seed=index)
    (folder / "empty.jpg").write_bytes(b"")
    # Named on the command line, since predict leaves files without an image extension out of a folder.
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    out = tmp_path / "results.csv"
    result = runner.invoke(app, ["predict", _target(run_and_bundle, "bundle_default_tflite"), str(folder), str(notes),
                                 "--out", str(out), "--top-k", "2"])
    assert result.exit_code == 5
    assert "predicted 5 of 7 files" in result.output
    assert "skipped 1 as empty" in result.output
    assert "skipped 1 as not_an_image" in result.output
    import csv

    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 7
    assert list(rows[0]) == ["path", "class", "confidence", "class_2", "probability_2", "error", "reason"]
    good = [row for row in rows if not row["error"]]
    assert {row["class"] for row in good} == {"dog"}
    assert {row["reason"] for row in rows if row["error"]} == {"empty", "not_an_image"}


def test_cli_writes_json_lines_file(run_and_bundle, tmp_path):
    image = make_image(tmp_path / "a.png", (40, 40, 220))
    out = tmp_path / "results.jsonl"
    result = runner.invoke(app, ["predict", _target(run_and_bundle, "bundle_keras"), str(image), "--out", str(out)])
    assert result.exit_code == 0, result.output
    [line] = out.read_text("utf-8").splitlines()
    assert json.loads(line)["class"] == "fish"


def test_cli_rejects_unknown_out_suffix(run_and_bundle, tmp_path):
    image = make_image(tmp_path / "a.png", (40, 40, 220))
    result = runner.invoke(app, ["predict", _target(run_and_bundle, "bundle_keras"), str(image),
                                 "--out", str(tmp_path / "results.txt")])
    assert result.exit_code == 3
    assert "--out" in result.output and "results.txt: expected a file name ending in .csv, .jsonl or .json" in result.output


def test_tflite_predict_does_not_import_tensorflow(run_and_bundle, tmp_path):
    image = make_image(tmp_path / "a.png", (220, 40, 40))
    code = (
        "import sys\n"
        "from imgclf.cli.main import app\n"
        "try:\n"
        f"    app(['predict', {_target(run_and_bundle, 'bundle_default_tflite')!r}, {str(image)!r}, '--json'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print('tensorflow' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = completed.stdout.strip().splitlines()
    assert json.loads(lines[0])["class"] == "cat", completed.stderr
    assert lines[-1] == "False"


def test_tflite_file_outside_bundle_is_rejected(run_and_bundle, tmp_path):
    import shutil

    loose = tmp_path / "model.tflite"
    shutil.copyfile(Path(_target(run_and_bundle, "bundle_default_tflite")) / "model.tflite", loose)
    image = make_image(tmp_path / "a.png", (220, 40, 40))
    result = runner.invoke(app, ["predict", str(loose), str(image)])
    assert result.exit_code == 6
    assert "needs the imgclf.json of its bundle" in result.output
