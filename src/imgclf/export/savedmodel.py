"""The SavedModel export: TensorFlow Serving's folder layout with two serving signatures.

`serving_default` takes encoded images, so a TensorFlow Serving client can send base64 JPEG,
PNG, GIF or BMP (`{"signature_name": "serving_default", "instances": [{"b64": "..."}]}` on
the REST API). `serve_pixels` takes float32 RGB pixels (N, H, W, 3) in [0, 255] of any size,
which the model resizes itself. Both return `probabilities` (N, n_classes) and `class_name` (N,).

The folder is written with Keras' `ExportArchive`, the class that `model.export` uses, because
`model.export` writes a single endpoint and this export needs two.
"""

from __future__ import annotations

import os
from pathlib import Path

from imgclf.runtimes import BYTES_SIGNATURE, PIXELS_SIGNATURE, PROBABILITIES_OUTPUT

IMAGE_BYTES_INPUT = "image_bytes"
PIXELS_INPUT = "images"
CLASS_NAME_OUTPUT = "class_name"


def write_savedmodel(model, folder: str | os.PathLike, classes: list[str], image_size: tuple[int, int]) -> Path:
    """Write `model` as a SavedModel at `folder` (created; normally `<base>/<name>/<version>`).

    Args:
        model: a Keras model that takes float32 RGB pixels in [0, 255] of any size.
        classes: class names in output order, returned by name as `class_name`.
        image_size: (height, width) the model resizes to; decoded images are resized to it
            before they are batched.
    """
    import tensorflow as tf
    from keras.export import ExportArchive

    height, width = image_size
    class_names = tf.constant(classes)

    def outputs(probabilities):
        return {
            PROBABILITIES_OUTPUT: probabilities,
            CLASS_NAME_OUTPUT: tf.gather(class_names, tf.argmax(probabilities, axis=-1)),
        }

    def decode_one(encoded):
        # NOTE: unlike imgclf.imageio, tf.io.decode_image (TensorFlow 2.21) applies no EXIF
        # orientation, drops an alpha channel instead of compositing it on white, and keeps the
        # high byte of 16-bit PNG samples (v >> 8) instead of round(v / 257). A rotated phone photo
        # or a transparent PNG can get other probabilities here than from `imgclf predict`;
        # `serve_pixels` fed by imgclf's decoder has no such difference.
        # decode_image's JPEG default is a fast inverse DCT that differed from Pillow's by up to 13
        # levels on the sign-language-digits photos; INTEGER_ACCURATE decoded them bit-identically.
        image = tf.cond(
            tf.io.is_jpeg(encoded),
            lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False),
        )
        # The model's own resize method, so its 'resize' layer is then a no-op, rounded to 8 bits as
        # Pillow's resize in imgclf.imageio is: the two then differ by at most 1 per sample.
        image = tf.image.resize(tf.cast(image, tf.float32), (height, width), method="bilinear", antialias=True)
        image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
        return tf.ensure_shape(image, (height, width, 3))

    def serve_image_bytes(image_bytes):
        images = tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32))
        return outputs(model(images, training=False))

    def serve_pixels(images):
        return outputs(model(images, training=False))

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(BYTES_SIGNATURE, serve_image_bytes,
                         input_signature=[tf.TensorSpec((None,), tf.string, name=IMAGE_BYTES_INPUT)])
    archive.add_endpoint(PIXELS_SIGNATURE, serve_pixels,
                         input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32, name=PIXELS_INPUT)])
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    archive.write_out(str(folder), verbose=False)
    return folder


def describe_signatures(n_classes: int, image_size: tuple[int, int]) -> dict:
    """Describe the signatures `write_savedmodel` writes, for the bundle manifest."""
    height, width = image_size
    returned = {
        PROBABILITIES_OUTPUT: f"float32 (N, {n_classes}) softmax probabilities in class order",
        CLASS_NAME_OUTPUT: "string (N,) the most probable class",
    }
    return {
        BYTES_SIGNATURE: {
            "inputs": {IMAGE_BYTES_INPUT: "string (N,) encoded JPEG, PNG, GIF or BMP; first frame of animations"},
            "outputs": returned,
            "decoding": f"tf.io.decode_image, then bilinear antialiased resize to {height}x{width}; "
                        "no EXIF orientation, alpha dropped rather than composited on white, "
                        "16-bit PNG reduced to its high byte",
        },
        PIXELS_SIGNATURE: {
            "inputs": {PIXELS_INPUT: "float32 (N, H, W, 3) RGB in [0, 255], any H and W"},
            "outputs": returned,
        },
    }
