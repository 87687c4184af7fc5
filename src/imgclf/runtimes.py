"""Runtimes: the ways imgclf runs a classifier on a batch of pixels.

Every runtime's `predict` takes float32 pixels of shape (N, height, width, 3), RGB in [0, 255],
at the model's input size, and returns float32 softmax probabilities of shape (N, n_classes).

- `KerasRuntime`: a Keras model called through one traced `tf.function` (never `model.predict`).
- `SavedModelRuntime`: the pixel signature of a SavedModel written by `imgclf export`.
- `LiteRTRuntime`: a `.tflite` file run by LiteRT (`ai-edge-litert`), which applies its XNNPACK
  delegate on CPU. It never imports TensorFlow, so prediction with it starts in about a second.

This module imports nothing heavy; each runtime imports its library when it is built.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from imgclf.errors import ModelError

# The signatures of an exported SavedModel: encoded image bytes, and pixel arrays of any size.
BYTES_SIGNATURE = "serving_default"
PIXELS_SIGNATURE = "serve_pixels"
PROBABILITIES_OUTPUT = "probabilities"


class Runtime:
    """A loaded model that maps a batch of pixels to class probabilities."""

    name = "runtime"
    n_classes: int
    # (height, width) the runtime requires, or None when it accepts any size.
    input_size: Optional[tuple[int, int]] = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return float32 probabilities (N, n_classes) for float32 pixels (N, height, width, 3) in [0, 255]."""
        raise NotImplementedError


class KerasRuntime(Runtime):
    """A Keras model traced once for every batch size at a fixed image size."""

    name = "keras"

    def __init__(self, model, image_size: tuple[int, int]):
        import tensorflow as tf

        self.model = model
        self.n_classes = int(model.output_shape[-1])
        height, width = image_size
        # training=False matters: a Keras 3.15 model called without it ran BatchNormalization in
        # training mode and updated its moving statistics.
        self._call = tf.function(
            lambda batch: model(batch, training=False),
            input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)],
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self._call(tf.convert_to_tensor(images, dtype=tf.float32)).numpy()


class SavedModelRuntime(Runtime):
    """The `serve_pixels` signature of a SavedModel folder written by `imgclf export`."""

    name = "savedmodel"

    def __init__(self, folder: str | os.PathLike):
        import tensorflow as tf

        try:
            self._loaded = tf.saved_model.load(str(folder))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot be loaded as a SavedModel ({exc})") from None
        if PIXELS_SIGNATURE not in self._loaded.signatures:
            found = ", ".join(sorted(self._loaded.signatures)) or "none"
            raise ModelError(
                f"{folder}: the SavedModel has no {PIXELS_SIGNATURE!r} signature (found: {found}); "
                "export it again with `imgclf export RUN --format savedmodel`"
            )
        self._signature = self._loaded.signatures[PIXELS_SIGNATURE]
        self.n_classes = int(self._signature.structured_outputs[PROBABILITIES_OUTPUT].shape[-1])

    def predict(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        outputs = self._signature(images=tf.convert_to_tensor(images, dtype=tf.float32))
        return outputs[PROBABILITIES_OUTPUT].numpy()


class LiteRTRuntime(Runtime):
    """A `.tflite` model run by the LiteRT interpreter with float32 input and output.

    The interpreter is resized when the batch size changes and is not thread-safe, so calls
    are serialised by a lock.
    """

    name = "tflite"

    def __init__(self, path: str | os.PathLike, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count() or 1)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: cannot be loaded as a TensorFlow Lite model ({exc})") from None
        [self._input] = self._interpreter.get_input_details()
        [self._output] = self._interpreter.get_output_details()
        shape = self._input["shape"]
        if len(shape) != 4 or shape[3] != 3:
            raise ModelError(f"{path}: expected an input of shape (N, height, width, 3), found {tuple(shape)}")
        self.input_size = (int(shape[1]), int(shape[2]))
        self.n_classes = int(self._output["shape"][-1])
        self._batch_size = int(shape[0])
        self._interpreter.allocate_tensors()
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            if batch.shape[0] != self._batch_size:
                self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch_size = batch.shape[0]
            self._interpreter.set_tensor(self._input["index"], batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"]).copy()
