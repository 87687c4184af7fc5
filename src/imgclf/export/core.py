"""`export_bundle`: write a run's model as a bundle of deployable formats, each checked for parity.

Order of work, so that a failed check leaves the output folder as it was:

1. read the run, load its model in Keras safe mode, decode a sample of validation images;
2. write each requested format into a hidden staging folder inside the output folder, load it
   back with the runtime `imgclf predict` uses, and compare it with the Keras model
   (`imgclf.export.parity`). A quantized `.tflite` is also scored on the whole validation split;
3. only when every check passes, move the files into place and write `imgclf.json`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from imgclf.bundle import (BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, EXPORT_FORMATS, KERAS_FILE,
                           QUANTIZE_MODES, SAVEDMODEL_FOLDER, artifact_key, read_bundle, sha256_of, size_of,
                           tflite_file_name, write_manifest)
from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.errors import ConfigError, DatasetError, ModelError
from imgclf.export.metadata import (DECODING_RULE, RunRecord, describe_preprocessing, describe_training, now_iso,
                                    read_run)
from imgclf.export.parity import (ImageSample, accuracy_change, compare, decode_sample, describe_failure, predict_all,
                                  sample_rows)
from imgclf.progress import Reporter
from imgclf.runs import load_keras_model, versions

# TensorFlow Serving model names: its model config reads them as plain identifiers.
_SERVING_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class ExportOptions:
    """Settings of `export_bundle`: the formats it writes and how strictly it checks them.

    Attributes:
        formats: any of `keras`, `savedmodel`, `tflite`. `model.keras` is written in every case,
            because it is the reference that `imgclf verify` compares the other files with.
        quantize: None (float32), `dynamic`, `float16` or `int8`; applies to `tflite` only.
        name: the TensorFlow Serving model name (`savedmodel/<name>/<version>`); default: the run
            folder's name with characters other than letters, digits, `_`, `.` and `-` replaced by `_`.
        version: the TensorFlow Serving version folder, an integer >= 1. Default 1.
        max_accuracy_drop: percentage points of validation top-1 accuracy a quantized model may
            lose against the Keras model before the export is rejected. Default 1.0.
        parity_images: validation images compared in the parity check. Default 200.
        calibration_images: training images int8 quantization measures activation ranges on. Default 200.
    """

    formats: Sequence[str]
    quantize: Optional[str] = None
    name: Optional[str] = None
    version: int = 1
    max_accuracy_drop: float = 1.0
    parity_images: int = 200
    calibration_images: int = 200

    def __post_init__(self) -> None:
        self.formats = list(dict.fromkeys(self.formats))
        unknown = [name for name in self.formats if name not in EXPORT_FORMATS]
        if unknown or not self.formats:
            raise ConfigError(f"--format {', '.join(unknown) or '(none)'}: expected one or more of {', '.join(EXPORT_FORMATS)}")
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise ConfigError(f"--quantize {self.quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}")
        if self.quantize is not None and "tflite" not in self.formats:
            raise ConfigError(f"--quantize {self.quantize} applies to TensorFlow Lite only; add --format tflite")
        if self.name is not None and not _SERVING_NAME.match(self.name):
            raise ConfigError(f"--name {self.name!r}: use letters, digits, '_', '.' and '-', starting with a letter or digit")
        if self.version < 1:
            raise ConfigError(f"--version {self.version}: TensorFlow Serving versions are integers >= 1")
        if self.max_accuracy_drop < 0:
            raise ConfigError(f"--max-accuracy-drop {self.max_accuracy_drop}: expected percentage points >= 0")
        if self.parity_images < 1 or self.calibration_images < 1:
            raise ConfigError("--parity-images and --calibration-images must be at least 1")


@dataclass
class _Context:
    """The inputs that every format's export step shares."""

    run: RunRecord
    model: object
    image_size: tuple[int, int]
    options: ExportOptions
    staging: Path
    sample: ImageSample
    reference: np.ndarray
    max_pixels: int
    reporter: Reporter


def export_bundle(run_dir: str | os.PathLike, out: str | os.PathLike, options: ExportOptions,
                  reporter: Optional[Reporter] = None) -> dict:
    """Export a run's model into the bundle folder `out` and return the bundle manifest.

    An existing bundle of the same model in `out` keeps its other files; a format exported
    again replaces its file.

    Raises:
        ModelError: the run is incomplete, `out` contains something else, a conversion fails, an
            exported model fails its parity check, or a quantized model loses more than
            `options.max_accuracy_drop` points of validation accuracy.
        DatasetError: the run's validation images cannot be found or decoded.
    """
    from imgclf.prediction import model_image_size
    from imgclf.runtimes import KerasRuntime

    reporter = reporter or Reporter()
    run = read_run(run_dir)
    out = Path(out)
    model_sha256 = sha256_of(run.model_file)
    existing = _existing_manifest(out, model_sha256)
    model = load_keras_model(run.model_file)
    image_size = model_image_size(model)
    max_pixels = run.max_image_pixels or DEFAULT_MAX_PIXELS
    sample = _parity_sample(run, image_size, options.parity_images, max_pixels, reporter)
    reference = predict_all(KerasRuntime(model, image_size), sample.images)

    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        context = _Context(run, model, image_size, options, staging, sample, reference, max_pixels, reporter)
        entries = [_export_keras(context)]
        if "savedmodel" in options.formats:
            entries.append(_export_savedmodel(context))
        if "tflite" in options.formats:
            entries.append(_export_tflite(context))
        manifest = _build_manifest(context, entries, existing, model_sha256)
        _move_into_place(staging, out, entries, existing)
        write_manifest(out, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_out and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)
    reporter.message(f"bundle written to {out} ({len(manifest['artifacts'])} model files); "
                     f"`imgclf verify {out}` checks it again in a new process")
    _track_bundle(run.folder, out)
    return manifest


def _track_bundle(run_dir: Path, bundle: Path) -> None:
    """Add the bundle to the run's MLflow run, when the run was tracked there."""
    from imgclf.config import load_config
    from imgclf.tracking import MlflowRun

    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        return
    tracker = MlflowRun.reopen(load_config(config_file).tracking.mlflow, Path(run_dir))
    if tracker is not None:
        tracker.log_files([bundle], folder="bundle")


def _existing_manifest(out: Path, model_sha256: str) -> Optional[dict]:
    """Return the manifest of a bundle of the same model already in `out`, None for a new or empty folder."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ModelError(f"--out {out}: is a file; give a folder for the bundle")
    if (out / BUNDLE_FILE).is_file():
        manifest = read_bundle(out).manifest
        if manifest.get("source", {}).get("model_sha256") != model_sha256:
            raise ModelError(
                f"--out {out}: holds a bundle of another model (its {BUNDLE_FILE} names a different "
                f"{KERAS_FILE}); give a new folder"
            )
        return manifest
    visible = [item.name for item in out.iterdir() if not item.name.startswith(".export-")]
    if visible:
        raise ModelError(f"--out {out}: the folder is not empty and holds no {BUNDLE_FILE}; give an empty or new folder")
    return None


def _parity_sample(run: RunRecord, image_size, n_images: int, max_pixels: int, reporter: Reporter) -> ImageSample:
    split = run.read_split()
    split_name = next((name for name in ("val", "test", "train") if split.rows[name]), None)
    if split_name is None:
        raise DatasetError(f"{split.folder}: the split lists no images")
    if split_name != "val":
        reporter.message(f"the validation split is empty; checking parity on the {split_name} split instead")
    rows = sample_rows(split.rows[split_name], n_images, run.seed)
    sample = decode_sample(split_name, rows, split.classes, image_size, max_pixels)
    reporter.message(f"exporting {run.folder}: {len(run.classes)} classes, input {image_size[0]}x{image_size[1]}; "
                     f"parity check on {len(sample)} {split_name} images")
    return sample


def _check(context: _Context, key: str, runtime, quantized: bool) -> dict:
    """Compare a loaded export with the Keras model on the parity sample; raise when it fails."""
    result = compare(context.reference, predict_all(runtime, context.sample.images), quantized)
    if not result["passed"]:
        hint = (" Try another --quantize mode." if quantized
                else " The converter changed the model's results; keep using model.keras and report the model.")
        raise ModelError(describe_failure(key, result) + "." + hint)
    return result


def _entry(context: _Context, key: str, export_format: str, path: str, parity: dict, **fields) -> dict:
    location = context.staging / path
    entry = {"key": key, "format": export_format, "path": path, "bytes": size_of(location),
             "sha256": sha256_of(location), "created": now_iso(), **fields, "parity": parity}
    context.reporter.message(
        f"{key}: {entry['bytes'] / 1024:,.0f} KiB; parity max abs diff {parity['max_abs_diff']:.2e}, "
        f"top-1 agreement {parity['top1_agreement']:.2%} on {parity['n_images']} images"
    )
    return entry


def _export_keras(context: _Context) -> dict:
    from imgclf.runtimes import KerasRuntime

    target = context.staging / KERAS_FILE
    shutil.copyfile(context.run.model_file, target)
    reloaded = load_keras_model(target)
    parity = _check(context, "keras", KerasRuntime(reloaded, context.image_size), quantized=False)
    return _entry(context, "keras", "keras", KERAS_FILE, parity, quantize=None, safe_mode_load=True,
                  input="float32 or uint8 (N, H, W, 3) RGB in [0, 255], any H and W; resized inside the model")


def _export_savedmodel(context: _Context) -> dict:
    from imgclf.export.savedmodel import describe_signatures, write_savedmodel
    from imgclf.runtimes import SavedModelRuntime

    name = context.options.name or _serving_name(context.run.folder.name)
    relative = f"{SAVEDMODEL_FOLDER}/{name}/{context.options.version}"
    folder = write_savedmodel(context.model, context.staging / relative, context.run.classes, context.image_size)
    parity = _check(context, "savedmodel", SavedModelRuntime(folder), quantized=False)
    return _entry(
        context, "savedmodel", "savedmodel", relative, parity, quantize=None,
        signatures=describe_signatures(len(context.run.classes), context.image_size),
        parity_signature="serve_pixels",
        tensorflow_serving={"model_name": name, "model_base_path": f"{SAVEDMODEL_FOLDER}/{name}",
                            "version": context.options.version},
    )


def _export_tflite(context: _Context) -> dict:
    from imgclf.export.tflite import convert_tflite
    from imgclf.runtimes import LiteRTRuntime

    quantize = context.options.quantize
    key = artifact_key("tflite", quantize)
    calibration = _calibration_images(context) if quantize == "int8" else None
    context.reporter.message(f"{key}: converting" + (f" with {len(calibration)} calibration images" if quantize == "int8" else ""))
    flatbuffer = convert_tflite(context.model, context.image_size, context.staging, quantize, calibration)
    shutil.rmtree(context.staging / "for_tflite", ignore_errors=True)
    relative = tflite_file_name(quantize)
    (context.staging / relative).write_bytes(flatbuffer)
    runtime = LiteRTRuntime(context.staging / relative)
    parity = _check(context, key, runtime, quantized=quantize is not None)
    height, width = context.image_size
    fields = {"quantize": quantize, "runtime": "LiteRT (ai-edge-litert) with the XNNPACK delegate",
              "input": f"float32 (N, {height}, {width}, 3) RGB in [0, 255] at the input size; resize before calling"}
    if quantize is not None:
        fields["accuracy"] = _accuracy_check(context, key, runtime)
    return _entry(context, key, "tflite", relative, parity, **fields)


def _calibration_images(context: _Context) -> np.ndarray:
    split = context.run.read_split()
    rows = sample_rows(split.rows["train"], context.options.calibration_images, context.run.seed + 1)
    return decode_sample("train", rows, split.classes, context.image_size, context.max_pixels).images


def _accuracy_check(context: _Context, key: str, runtime) -> dict:
    """Score a quantized model and the Keras model on the whole validation split; raise on a large drop."""
    from imgclf.runtimes import KerasRuntime

    split = context.run.read_split()
    split_name = context.sample.split
    full = decode_sample(split_name, split.rows[split_name], split.classes, context.image_size, context.max_pixels)
    keras_probabilities = predict_all(KerasRuntime(context.model, context.image_size), full.images)
    result = accuracy_change(keras_probabilities, predict_all(runtime, full.images), full,
                             context.options.max_accuracy_drop)
    context.reporter.message(
        f"{key}: {split_name} top-1 accuracy {result['exported']:.4f} against {result['keras']:.4f} for the Keras "
        f"model ({result['change_points']:+.2f} points) on {result['n_images']} images"
    )
    if not result["passed"]:
        raise ModelError(
            f"{key} rejected: {split_name} top-1 accuracy {result['exported']:.4f} against {result['keras']:.4f} "
            f"for the Keras model, a drop of {-result['change_points']:.2f} points, more than "
            f"--max-accuracy-drop {context.options.max_accuracy_drop:g}; try --quantize dynamic or float16, "
            "or raise --max-accuracy-drop"
        )
    return result


def _serving_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text).lstrip("_.-")
    return name or "model"


def _build_manifest(context: _Context, entries: list[dict], existing: Optional[dict], model_sha256: str) -> dict:
    kept = [entry for entry in (existing or {}).get("artifacts", [])
            if entry["key"] not in {new["key"] for new in entries}]
    height, width = context.image_size
    run = context.run
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "created": now_iso(),
        "name": run.folder.name,
        "classes": run.classes,
        "input": {"height": height, "width": width, "channels": 3, "channel_order": "RGB", "layout": "NHWC",
                  "dtype": "float32", "value_range": [0, 255], "decoding": DECODING_RULE},
        "preprocessing_in_graph": describe_preprocessing(context.model),
        "preprocessing_summary": run.record.get("model", {}).get("preprocessing"),
        "output": {"name": "probabilities", "shape": [None, len(run.classes)], "activation": "softmax",
                   "order": "classes"},
        "source": {"run_dir": str(run.folder.resolve()), "model_file": KERAS_FILE, "model_sha256": model_sha256},
        "training": describe_training(run),
        "evaluation": run.evaluation,
        "versions": {"export": versions(), "training": run.record.get("versions")},
        "parity_sample": context.sample.describe(),
        "artifacts": sorted(kept + entries, key=_artifact_order),
    }


def _artifact_order(entry: dict) -> int:
    keys = ["keras", "savedmodel", "tflite"] + [artifact_key("tflite", mode) for mode in QUANTIZE_MODES]
    return keys.index(entry["key"]) if entry["key"] in keys else len(keys)


def _move_into_place(staging: Path, out: Path, entries: list[dict], existing: Optional[dict]) -> None:
    """Move each staged file or folder to its place in `out`, removing what it replaces."""
    replaced = {entry["key"]: entry["path"] for entry in (existing or {}).get("artifacts", [])}
    for entry in entries:
        targets = {entry["path"], replaced.get(entry["key"], entry["path"])}
        for relative in targets:
            _remove(out / relative)
        destination = out / entry["path"]
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / entry["path"], destination)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
