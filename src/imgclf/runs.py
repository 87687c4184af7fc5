"""Run directories: where a training run writes what it used and what it produced.

Layout of a run directory:

    config.yaml        the resolved config (file plus overrides)
    classes.json       class names in model output order
    run.json           seed, versions, data manifest hash, counts, timings, skipped files
    history.json       per-epoch metrics (also metrics.csv)
    model.keras        the best model (by `train.monitor`); takes raw RGB pixels
    split/             the split, when `data.path` was a dataset root split on the fly
    tensorboard/       TensorBoard event files
    evaluation/        written by `imgclf evaluate`
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import NamedTuple, Optional

from imgclf.errors import ModelError

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
RUN_FILE = "run.json"


def versions() -> dict:
    """Versions of imgclf, TensorFlow, Keras, NumPy and Python (imports TensorFlow)."""
    import keras
    import numpy
    import tensorflow

    import imgclf

    return {
        "imgclf": imgclf.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def new_run_dir(runs_dir: str, name: Optional[str], default_stem: str) -> Path:
    """Create and return a fresh run directory; a taken name gets a numeric suffix."""
    stem = name or f"{default_stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    base = Path(runs_dir)
    base.mkdir(parents=True, exist_ok=True)
    candidate = base / stem
    suffix = 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate = base / f"{stem}-{suffix}"
            suffix += 1


def write_json(path: str | os.PathLike, payload) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "utf-8")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text("utf-8"))


class ResolvedModel(NamedTuple):
    """A model file to predict with, its class names and the runtime that runs it."""

    # A `.keras` or `.tflite` file, or a SavedModel folder.
    model_file: Path
    classes: list[str]
    # The run directory the model came from, when it is still inside one.
    run_dir: Optional[Path]
    # (height, width) from a bundle manifest, or None to read the size from the model.
    image_size: Optional[tuple[int, int]]
    # The runtime that runs it: "keras", "savedmodel" or "tflite".
    runtime: str


def resolve_model(model: str | os.PathLike) -> ResolvedModel:
    """Find the model file and its class names from a run directory, a bundle, or a model file.

    Accepted: a run directory (its `model.keras`), a `.keras` file with `classes.json` beside it,
    a bundle folder written by `imgclf export` (its `model.tflite` when it has one, else its
    `model.keras`), or a `.keras` or `.tflite` file or SavedModel folder inside a bundle.

    Raises:
        ModelError: when the model file or its class names cannot be found or read.
    """
    from imgclf.bundle import find_bundle

    path = Path(model)
    found = find_bundle(path) if path.exists() else None
    if found is not None:
        bundle, entry = found
        return ResolvedModel(bundle.path_of(entry), bundle.classes, None, bundle.image_size, entry["format"])
    if path.is_dir():
        model_file, run_dir = path / MODEL_FILE, path
        if not model_file.is_file():
            raise ModelError(
                f"{path}: no {MODEL_FILE} in this folder; give a run directory written by `imgclf train` "
                "or a bundle written by `imgclf export`"
            )
    elif path.is_file():
        if path.suffix.lower() == ".tflite":
            raise ModelError(
                f"{path}: a .tflite file needs the imgclf.json of its bundle for its class names; "
                "keep it inside the folder `imgclf export` wrote"
            )
        model_file, run_dir = path, (path.parent if (path.parent / RUN_FILE).is_file() else None)
    else:
        raise ModelError(f"{model}: model not found; give a run directory, a bundle or a .keras file")
    return ResolvedModel(model_file, _read_classes(model_file), run_dir, None, "keras")


def _read_classes(model_file: Path) -> list[str]:
    classes_file = model_file.parent / CLASSES_FILE
    if not classes_file.is_file():
        raise ModelError(
            f"{model_file}: no {CLASSES_FILE} beside the model, so its outputs cannot be named; "
            "keep the model inside its run directory"
        )
    try:
        classes = read_json(classes_file)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{classes_file}: invalid JSON ({exc})") from None
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise ModelError(f"{classes_file}: expected a JSON list of class names")
    return classes


def load_keras_model(model_file: Path):
    """Load a `.keras` model for inference in safe mode."""
    import keras

    try:
        return keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{model_file}: cannot be loaded as a Keras model ({exc})") from None
