"""The run facts a bundle manifest records, read from the run directory."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from imgclf.bundle import sha256_of
from imgclf.errors import DatasetError, ModelError
from imgclf.runs import CLASSES_FILE, MODEL_FILE, RUN_FILE, read_json
from imgclf.splitting import SPLITS, Split, read_split

# imgclf's rule for turning a file into model input, stated once for every manifest.
DECODING_RULE = (
    "imgclf.imageio.load_image: first frame, EXIF orientation applied, transparency composited on white, "
    "16-bit scaled by round(v / 257), then Pillow's antialiased bilinear resize to height x width"
)


@dataclass
class RunRecord:
    """The parts of a run directory an export reads."""

    folder: Path
    model_file: Path
    classes: list[str]
    # config.yaml as written by `imgclf train`, and run.json.
    config: dict
    record: dict
    # evaluation/<split>_metrics.json by split name.
    evaluation: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.record.get("seed", self.config.get("seed", 0)))

    @property
    def max_image_pixels(self) -> Optional[int]:
        return self.config.get("data", {}).get("max_image_pixels")

    def split_folder(self) -> Path:
        """Return the split folder the run trained on: run.json's `data.split_folder`, else the config's `data.path`."""
        folder = self.record.get("data", {}).get("split_folder") or self.config.get("data", {}).get("path")
        if not folder:
            raise ModelError(f"{self.folder / RUN_FILE}: records no split folder, so no validation images can be found")
        return Path(folder)

    def read_split(self) -> Split:
        """Read the run's split, checking that it still has the run's classes.

        Raises:
            DatasetError: when the split folder is gone or its classes changed since training.
        """
        folder = self.split_folder()
        if not folder.is_dir():
            raise DatasetError(
                f"{folder}: the run's split folder is not found; an export checks the exported model on "
                "its validation images, so restore the folder (or its train.csv, val.csv and test.csv)"
            )
        split = read_split(folder)
        if split.classes != self.classes:
            raise DatasetError(f"{folder}: classes.json differs from the run's {CLASSES_FILE}; the split was changed after training")
        return split


def read_run(run_dir: str | Path) -> RunRecord:
    """Read the model path, classes, config, run record and evaluation metrics of a finished run.

    Raises:
        ModelError: when `run_dir` is not a finished run directory.
    """
    folder = Path(run_dir)
    for name in (MODEL_FILE, CLASSES_FILE, RUN_FILE, "config.yaml"):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: not a finished run directory (no {name}); give a folder written by `imgclf train`")
    try:
        classes = read_json(folder / CLASSES_FILE)
        record = read_json(folder / RUN_FILE)
        config = yaml.safe_load((folder / "config.yaml").read_text("utf-8")) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"{folder}: a run file is not valid JSON or YAML ({exc})") from None
    evaluation = {}
    for split in SPLITS:
        metrics_file = folder / "evaluation" / f"{split}_metrics.json"
        if metrics_file.is_file():
            evaluation[split] = _metrics_summary(read_json(metrics_file))
    return RunRecord(folder, folder / MODEL_FILE, classes, config, record, evaluation)


# Metrics entries that list files by their paths on the training machine: the manifest keeps their counts.
_FILE_LISTS = ("skipped", "misclassified")


def _metrics_summary(metrics: dict) -> dict:
    """Replace the metrics' lists of files with their lengths, and drop what the manifest states elsewhere."""
    summary = {key: value for key, value in metrics.items() if key not in _FILE_LISTS + ("classes", "split")}
    for key in _FILE_LISTS:
        if key in metrics:
            summary[f"n_{key}"] = len(metrics[key])
    return summary


def describe_preprocessing(model) -> list[dict]:
    """List the preprocessing layers at the start of the model graph, with their settings."""
    import keras

    steps = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Resizing):
            steps.append({"layer": layer.name, "op": "Resizing", "height": layer.height, "width": layer.width,
                          "interpolation": layer.interpolation, "antialias": bool(layer.antialias),
                          "crop_to_aspect_ratio": bool(layer.crop_to_aspect_ratio)})
        elif isinstance(layer, keras.layers.Rescaling):
            steps.append({"layer": layer.name, "op": "Rescaling", "scale": _plain(layer.scale),
                          "offset": _plain(layer.offset)})
        else:
            break
    return steps


def _plain(value):
    """Convert a layer setting that may be a number, a list or an array to plain JSON values."""
    array = np.asarray(value, dtype=float)
    return float(array) if array.ndim == 0 else array.tolist()


def describe_training(run: RunRecord) -> dict:
    """Collect the run's config, seed, data-manifest hashes, counts and best epoch for the manifest."""
    data = run.record.get("data", {})
    split_files = {}
    split_folder = data.get("split_folder")
    if split_folder:
        for name in (f"{split}.csv" for split in SPLITS):
            path = Path(split_folder) / name
            if path.is_file():
                split_files[name] = sha256_of(path)
    training = run.record.get("training", {})
    calibration_file = run.folder / "calibration.json"
    return {
        "run_dir": str(run.folder.resolve()),
        "seed": run.seed,
        "config": run.config,
        "data": {
            "manifest_sha256": data.get("manifest_sha256"),
            "split_files_sha256": split_files,
            "split_folder": split_folder,
            "counts": data.get("counts"),
        },
        "best_epoch": training.get("best_epoch"),
        "best_metrics": training.get("best_metrics"),
        # The exported model files return probabilities without this temperature applied.
        "calibration": read_json(calibration_file) if calibration_file.is_file() else None,
    }


def now_iso() -> str:
    """Return the local time as ISO 8601 with its UTC offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
