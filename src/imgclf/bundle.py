"""Export bundles: model files plus `imgclf.json`, the manifest that describes them.

Layout of a bundle folder written by `imgclf export`:

    imgclf.json                     the manifest
    model.keras                     always present: the parity reference, loadable in Keras safe mode
    savedmodel/<name>/<version>/    `--format savedmodel`, in TensorFlow Serving's layout
    model.tflite                    `--format tflite`, float32
    model_<mode>.tflite             `--format tflite --quantize dynamic|float16|int8`

The manifest contains the class names in output order, the input contract, the preprocessing
inside the graph, one entry per model file (size, SHA-256, parity result) and what the run
recorded: its config, data-manifest hashes, evaluation metrics and library versions.
`imgclf predict`, `imgclf verify` and `imgclf.load` read it and carry no copies of their own.

This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from imgclf.errors import ModelError

BUNDLE_FILE = "imgclf.json"
BUNDLE_FORMAT = "imgclf-bundle"
BUNDLE_FORMAT_VERSION = 1
KERAS_FILE = "model.keras"
SAVEDMODEL_FOLDER = "savedmodel"

EXPORT_FORMATS = ("keras", "savedmodel", "tflite")
QUANTIZE_MODES = ("dynamic", "float16", "int8")

# A bundle folder given to `predict` runs the first of these it contains. A float32 `.tflite` matches
# the Keras model within 1e-4, and in benchmarks/predict_speed.py it used the least CPU per image of
# the float formats. Quantized files change the probabilities, so they run only when their path is given.
DEFAULT_ARTIFACT_ORDER = ("tflite", "keras")

# How many folders above a model file `find_bundle` looks for `imgclf.json`: a SavedModel
# sits three levels below the bundle root (savedmodel/<name>/<version>).
_MAX_BUNDLE_DEPTH = 3


def artifact_key(export_format: str, quantize: Optional[str] = None) -> str:
    """Name an artifact: `keras`, `savedmodel`, `tflite` or `tflite-<quantize mode>`."""
    return f"{export_format}-{quantize}" if quantize else export_format


def tflite_file_name(quantize: Optional[str]) -> str:
    """Return the bundle file name of a `.tflite` model: `model.tflite` or `model_<mode>.tflite`."""
    return f"model_{quantize}.tflite" if quantize else "model.tflite"


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder: every file's relative path and bytes, in sorted path order."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())
    for item in files:
        if item != path:
            digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        with open(item, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path: str | os.PathLike) -> int:
    """Bytes in a file, or in every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


@dataclass
class Bundle:
    """A bundle folder and its parsed manifest."""

    folder: Path
    manifest: dict

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) the models were trained at."""
        return int(self.manifest["input"]["height"]), int(self.manifest["input"]["width"])

    @property
    def artifacts(self) -> list[dict]:
        return list(self.manifest["artifacts"])

    def artifact(self, key: str) -> Optional[dict]:
        """Return the artifact entry named `key` (see `artifact_key`), or None."""
        return next((entry for entry in self.manifest["artifacts"] if entry["key"] == key), None)

    def path_of(self, entry: dict) -> Path:
        return self.folder / entry["path"]

    def default_artifact(self) -> dict:
        """Return the artifact a bundle folder runs when no model file is named (`DEFAULT_ARTIFACT_ORDER`)."""
        for key in DEFAULT_ARTIFACT_ORDER:
            entry = self.artifact(key)
            if entry is not None:
                return entry
        raise ModelError(f"{self.folder / BUNDLE_FILE}: lists no {KERAS_FILE}; export the run again")

    def artifact_at(self, path: Path) -> Optional[dict]:
        """Return the artifact entry whose file or folder is `path`, or None."""
        target = path.resolve()
        return next((entry for entry in self.artifacts if self.path_of(entry).resolve() == target), None)


def read_bundle(folder: str | os.PathLike) -> Bundle:
    """Read and check the manifest of a bundle folder.

    Raises:
        ModelError: when `imgclf.json` is missing, is not valid JSON, or lacks a required field.
    """
    folder = Path(folder)
    manifest_path = folder / BUNDLE_FILE
    if not manifest_path.is_file():
        raise ModelError(f"{folder}: no {BUNDLE_FILE} in this folder; give a bundle written by `imgclf export`")
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{manifest_path}: invalid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{manifest_path}: not an imgclf bundle manifest (expected \"format\": \"{BUNDLE_FORMAT}\")")
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise ModelError(
            f"{manifest_path}: bundle format_version {version!r} is not supported by this imgclf "
            f"(it reads version {BUNDLE_FORMAT_VERSION}); export the run again with this imgclf"
        )
    missing = [key for key in ("classes", "input", "artifacts") if key not in manifest]
    if missing:
        raise ModelError(f"{manifest_path}: missing field(s) {', '.join(missing)}; export the run again")
    classes = manifest["classes"]
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise ModelError(f"{manifest_path}: \"classes\" must be a list of class names")
    return Bundle(folder, manifest)


def write_manifest(folder: str | os.PathLike, manifest: dict) -> Path:
    """Write `imgclf.json` through a temporary file, so a reader never sees half a manifest."""
    path = Path(folder) / BUNDLE_FILE
    partial = path.with_name(f".{BUNDLE_FILE}.{os.getpid()}.partial")
    partial.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    os.replace(partial, path)
    return path


def find_bundle(path: str | os.PathLike) -> Optional[tuple[Bundle, dict]]:
    """Find the bundle that `path` is, or the bundle artifact that `path` names.

    Returns (bundle, artifact entry): the default artifact for a bundle folder, the named one
    for a model file or SavedModel folder listed in a manifest up to three folders above it.
    Returns None when `path` belongs to no bundle.
    """
    path = Path(path)
    if path.is_dir() and (path / BUNDLE_FILE).is_file():
        bundle = read_bundle(path)
        return bundle, bundle.default_artifact()
    for parent in list(path.resolve().parents)[:_MAX_BUNDLE_DEPTH]:
        if (parent / BUNDLE_FILE).is_file():
            bundle = read_bundle(parent)
            entry = bundle.artifact_at(path)
            if entry is not None:
                return bundle, entry
    return None
