"""The TensorFlow Lite export, converted from a SavedModel (`TFLiteConverter.from_saved_model`).

The `.tflite` model takes float32 RGB pixels (N, height, width, 3) in [0, 255] already at the
model's input size, and returns float32 probabilities (N, n_classes). Its graph starts after the
model's 'resize' layer, because that layer's antialiased resize compiles to TensorFlow's
ScaleAndTranslate op, which TFLite has no builtin kernel for. Resizing to the input size is a
no-op for that layer, so nothing else changes; imgclf resizes with Pillow before the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from imgclf.errors import ModelError

TFLITE_SIGNATURE = "serving_default"


def model_after_resize(model):
    """Return the part of `model` after its 'resize' layer, or `model` itself when it has none."""
    import keras

    try:
        resize = model.get_layer("resize")
    except ValueError:
        return model
    return keras.Model(resize.output, model.output, name=f"{model.name}_after_resize")


def _write_fixed_size_savedmodel(model, folder: Path, image_size: tuple[int, int]) -> None:
    import tensorflow as tf
    from keras.export import ExportArchive

    height, width = image_size
    inner = model_after_resize(model)

    def serve(images):
        return {"probabilities": inner(images, training=False)}

    archive = ExportArchive()
    archive.track(inner)
    archive.add_endpoint(TFLITE_SIGNATURE, serve,
                         input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32, name="images")])
    archive.write_out(str(folder), verbose=False)


def convert_tflite(model, image_size: tuple[int, int], work_folder: str | os.PathLike,
                   quantize: Optional[str] = None, calibration_images: Optional[np.ndarray] = None) -> bytes:
    """Convert a Keras model to a `.tflite` flatbuffer.

    Args:
        model: a Keras model whose input is RGB pixels in [0, 255].
        image_size: (height, width) of the `.tflite` input.
        work_folder: an empty folder for the intermediate SavedModel.
        quantize: None (float32), `dynamic` (int8 weights, float activations), `float16`
            (float16 weights) or `int8` (int8 weights and activations, float32 input and output).
        calibration_images: uint8 or float (N, height, width, 3), required for `int8`: the
            converter measures each activation's range on them.

    Raises:
        ModelError: when the converter rejects the model.
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert_phase import ConverterError

    saved = Path(work_folder) / "for_tflite"
    _write_fixed_size_savedmodel(model, saved, image_size)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[TFLITE_SIGNATURE])
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.representative_dataset = _representative_dataset(calibration_images)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except (ConverterError, ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the TFLite converter rejected the model ({first_line})") from exc


def _representative_dataset(images: Optional[np.ndarray]):
    if images is None or len(images) == 0:
        raise ModelError("int8 quantization needs calibration images from the training split, and none were decoded")

    def generate():
        for image in images:
            yield [np.asarray(image, dtype=np.float32)[np.newaxis]]

    return generate
