"""The served model: a `Predictor` plus the name, version and metadata the API reports.

Decoding is `imgclf.imageio.load_image`, the function `imgclf predict` and training use, and
the model call is `Predictor.predict_arrays`, so the server and the command line return the same
probabilities for the same file. A bundle with a `.tflite` file runs on LiteRT, and then this
module never imports TensorFlow. A run directory, or a bundle without a `.tflite` file, runs
`model.keras` through `KerasRuntime`'s traced `tf.function`.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.imageio import load_image
from imgclf.prediction import Predictor
from imgclf.runs import RUN_FILE, ResolvedModel, resolve_model

# Hex digits of the model file's SHA-256 that make up its version in responses and metrics.
VERSION_DIGITS = 12
# Per-split numbers from an evaluation that /metadata reports; the rest (confusion matrices,
# misclassified files) stays in the bundle.
METRIC_KEYS = ("n_images", "accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class")


@dataclass
class ModelInfo:
    """Description of the served model for clients: identity, inputs, and recorded metrics."""

    name: str
    # The first `VERSION_DIGITS` hex digits of the served file's SHA-256.
    version: str
    # "tflite", "keras" or "savedmodel".
    runtime: str
    model_file: str
    classes: list[str]
    image_size: tuple[int, int]
    decoding: Optional[str] = None
    created: Optional[str] = None
    metrics: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        height, width = self.image_size
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime,
            "model_file": self.model_file,
            "classes": self.classes,
            "input": {"height": height, "width": width, "channels": 3, "channel_order": "RGB",
                      "decoding": self.decoding},
            "created": self.created,
            "metrics": self.metrics,
            "versions": self.versions,
        }


class ServedModel:
    """A loaded predictor with its `ModelInfo`, and the timings of loading and warming it up."""

    def __init__(self, predictor: Predictor, info: ModelInfo, load_seconds: float = 0.0):
        self.predictor = predictor
        self.info = info
        self.load_seconds = load_seconds
        self.warmup_seconds: Optional[float] = None

    @classmethod
    def load(cls, model: str | os.PathLike | ResolvedModel, max_pixels: int = DEFAULT_MAX_PIXELS,
             threads: Optional[int] = None) -> "ServedModel":
        """Load a run directory or bundle (or the `ResolvedModel` found for one).

        Raises:
            ModelError: the model or its class names cannot be found or loaded.
        """
        started = time.perf_counter()
        resolved = model if isinstance(model, ResolvedModel) else resolve_model(model)
        predictor = Predictor.from_resolved(resolved, max_pixels, threads)
        info = describe_model(resolved, predictor)
        return cls(predictor, info, time.perf_counter() - started)

    @property
    def classes(self) -> list[str]:
        return self.predictor.classes

    @property
    def max_pixels(self) -> int:
        return self.predictor.max_pixels

    def decode(self, data: bytes) -> np.ndarray:
        """Decode and resize encoded image bytes for the model.

        Returns:
            uint8 array (height, width, 3) in [0, 255].

        Raises:
            ImageError: with the reason `imgclf.imageio.decode_pil` documents.
        """
        return load_image(data, self.predictor.image_size, self.predictor.max_pixels)

    def predict_pixels(self, batch: np.ndarray) -> np.ndarray:
        """Return float32 probabilities (N, classes) for uint8 pixels (N, height, width, 3)."""
        # NOTE: `Predictor.predict` makes these same calls after decoding: the model, then the
        # temperature fitted on the validation split. A step added there must be added here too,
        # and the CLI-parity test catches a difference.
        return self.predictor.calibrate(self.predictor.predict_arrays(batch))

    def top_classes(self, probabilities: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Return the `k` most probable classes, highest first, ties in class order (as `imgclf predict`)."""
        order = np.argsort(-probabilities, kind="stable")[: max(1, k)]
        return [(self.classes[i], float(probabilities[i])) for i in order]

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> float:
        """Decode a generated PNG and JPEG and run the model at each batch size; return the seconds taken.

        The first call of a runtime allocates its buffers (LiteRT) or traces its graph
        (TensorFlow). That made the first request of a cold server 10 to 100 times slower than
        the next, so the server reports ready only after this.
        """
        started = time.perf_counter()
        # Pillow imports its less common format plugins on the first file that needs them.
        Image.init()
        pixels = [self.decode(data) for data in sample_images(self.predictor.image_size)]
        for size in batch_sizes:
            self.predict_pixels(np.stack([pixels[index % len(pixels)] for index in range(size)]))
        self.warmup_seconds = time.perf_counter() - started
        return self.warmup_seconds


def sample_images(size: tuple[int, int]) -> list[bytes]:
    """Encode a grey PNG and a grey JPEG of `size` = (height, width), for warming up."""
    height, width = size
    files = []
    for image_format in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (128, 128, 128)).save(buffer, image_format)
        files.append(buffer.getvalue())
    return files


def describe_model(resolved: ResolvedModel, predictor: Predictor) -> ModelInfo:
    """Build the `ModelInfo` of a resolved model from its bundle manifest or its run directory."""
    from imgclf.bundle import find_bundle, sha256_of

    found = find_bundle(resolved.model_file)
    if found is not None:
        bundle, entry = found
        manifest = bundle.manifest
        return ModelInfo(
            name=str(manifest.get("name") or bundle.folder.name),
            version=str(entry.get("sha256") or sha256_of(resolved.model_file))[:VERSION_DIGITS],
            runtime=resolved.runtime,
            model_file=str(entry["path"]),
            classes=predictor.classes,
            image_size=predictor.image_size,
            decoding=manifest.get("input", {}).get("decoding"),
            created=manifest.get("created"),
            metrics=_summarise_metrics(manifest.get("evaluation") or {}),
            versions=manifest.get("versions") or {},
        )
    run_dir = resolved.run_dir
    record = _read_json(run_dir / RUN_FILE) if run_dir is not None else None
    return ModelInfo(
        name=(run_dir or resolved.model_file.parent).name,
        version=sha256_of(resolved.model_file)[:VERSION_DIGITS],
        runtime=resolved.runtime,
        model_file=resolved.model_file.name,
        classes=predictor.classes,
        image_size=predictor.image_size,
        decoding="imgclf.imageio.load_image",
        created=_modified_time(resolved.model_file),
        metrics=_summarise_metrics(_run_evaluations(run_dir)) if run_dir is not None else {},
        versions={"training": record.get("versions")} if isinstance(record, dict) else {},
    )


def _run_evaluations(run_dir: Path) -> dict:
    """Read every `evaluation/<split>_metrics.json` of a run, by split."""
    evaluations = {}
    for path in sorted((run_dir / "evaluation").glob("*_metrics.json")):
        content = _read_json(path)
        if isinstance(content, dict):
            evaluations[path.name.removesuffix("_metrics.json")] = content
    return evaluations


def _summarise_metrics(evaluations: dict) -> dict:
    return {
        split: {key: metrics[key] for key in METRIC_KEYS if key in metrics}
        for split, metrics in evaluations.items() if isinstance(metrics, dict)
    }


def _read_json(path: Path):
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _modified_time(path: Path) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime))
