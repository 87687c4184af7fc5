"""Prediction: a loaded model with its class names, applied to files or arrays in batches."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from imgclf.errors import ImageError
from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.imageio import load_image
from imgclf.runs import load_keras_model, resolve_model


@dataclass
class Prediction:
    """One input's result: the best class, its probability and the top k, or the error that stopped it."""

    path: str
    label: Optional[str] = None
    confidence: Optional[float] = None
    top_k: Optional[list[tuple[str, float]]] = None
    error: Optional[str] = None
    reason: Optional[str] = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error, "reason": self.reason}
        return {
            "path": self.path,
            "class": self.label,
            "confidence": self.confidence,
            "top_k": [{"class": name, "probability": probability} for name, probability in self.top_k],
        }


class Predictor:
    """A model, its class names and input size; `predict_arrays` and `predict_files` run it in batches."""

    def __init__(self, model, classes: Sequence[str], image_size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS):
        import tensorflow as tf

        self.model = model
        self.classes = list(classes)
        self.image_size = tuple(image_size)
        self.max_pixels = max_pixels
        n_outputs = model.output_shape[-1]
        if n_outputs != len(self.classes):
            from imgclf.errors import ModelError

            raise ModelError(f"the model has {n_outputs} outputs but {len(self.classes)} class names are stored beside it")
        height, width = self.image_size
        # One traced graph for every batch size: no per-call retracing, unlike model.predict on single images.
        self._infer = tf.function(
            lambda batch: model(batch, training=False),
            input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
        )

    @classmethod
    def load(cls, model_path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> "Predictor":
        """Load a run directory or a `.keras` file that has `classes.json` beside it."""
        model_file, classes, _ = resolve_model(model_path)
        model = load_keras_model(model_file)
        return cls(model, classes, _model_image_size(model), max_pixels)

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch.

        Args:
            images: uint8 or float array (N, height, width, 3) at the model's input size, values in [0, 255].

        Returns:
            float32 array (N, n_classes), rows summing to 1.
        """
        import tensorflow as tf

        return self._infer(tf.convert_to_tensor(np.asarray(images, dtype=np.float32))).numpy()

    def _result(self, path: str, probabilities: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
        top = [(self.classes[i], float(probabilities[i])) for i in order]
        return Prediction(path=path, label=top[0][0], confidence=top[0][1], top_k=top)

    def predict_files(self, paths: Iterable[str], top_k: int = 3, batch_size: int = 64) -> Iterator[Prediction]:
        """Predict files in input order; a file that cannot be decoded yields a Prediction with `error` set."""
        paths = list(paths)
        workers = max(1, min(16, (os.cpu_count() or 1) * 2))

        def decode(path: str):
            try:
                return load_image(path, self.image_size, self.max_pixels)
            except ImageError as error:
                return error

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start:start + batch_size]
                decoded = list(pool.map(decode, chunk))
                good = [i for i, item in enumerate(decoded) if not isinstance(item, ImageError)]
                probabilities = self.predict_arrays(np.stack([decoded[i] for i in good])) if good else None
                rows = dict(zip(good, probabilities)) if good else {}
                for i, path in enumerate(chunk):
                    if i in rows:
                        yield self._result(path, rows[i], top_k)
                    else:
                        yield Prediction(path=path, error=str(decoded[i]), reason=decoded[i].reason)


def _model_image_size(model) -> tuple[int, int]:
    """The (height, width) of the model's resizing layer."""
    try:
        layer = model.get_layer("resize")
    except ValueError:
        shape = model.input_shape
        if shape[1] is None or shape[2] is None:
            from imgclf.errors import ModelError

            raise ModelError(f"{model.name}: cannot tell the input size (no 'resize' layer and no fixed input shape)")
        return int(shape[1]), int(shape[2])
    return int(layer.height), int(layer.width)
