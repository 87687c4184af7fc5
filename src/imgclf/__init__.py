"""imgclf: train, evaluate and serve image classifiers from folders of labelled images.

The package root imports nothing heavy, so that `imgclf --help` answers without
loading TensorFlow. Import the submodules for the real work.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from imgclf.prediction import Predictor

__version__ = "0.1.0"


def load(model: str | os.PathLike, max_image_pixels: Optional[int] = None,
         num_threads: Optional[int] = None) -> "Predictor":
    """Load a model for prediction: `imgclf.load(path).predict(paths_or_arrays)`.

    Args:
        model: a run directory, a bundle folder written by `imgclf export` (it runs its
            `model.tflite` when it has one, else its `model.keras`), or a `.keras`, `.tflite`
            or SavedModel inside either.
        max_image_pixels: images with more pixels are rejected before decoding; default
            89,478,485, Pillow's decompression-bomb warning threshold.
        num_threads: LiteRT threads for a `.tflite` model; default one per CPU.

    Returns:
        an `imgclf.prediction.Predictor`. TensorFlow is imported here only for Keras and
        SavedModel files; a `.tflite` model runs on LiteRT alone.

    Raises:
        imgclf.errors.ModelError: when the model or its class names cannot be found or loaded.
    """
    from imgclf.constants import DEFAULT_MAX_PIXELS
    from imgclf.prediction import Predictor

    return Predictor.load(model, max_image_pixels or DEFAULT_MAX_PIXELS, num_threads)
