"""Data augmentation as Keras preprocessing layers, built from the `augmentation` config.

The settings mirror the classic `ImageDataGenerator` set. Layers run inside the `tf.data`
pipeline during training only, on float32 batches in [0, 255]; the saved model holds none
of them.
"""

from __future__ import annotations

import math
from typing import Optional

from imgclf.config import AugmentationConfig


def build_augmenter(config: AugmentationConfig, seed: int):
    """Return a `keras.Sequential` of random layers, or None when every setting is off.

    The model maps a float32 batch (N, H, W, 3) in [0, 255] to the same shape and range.
    """
    if not config.enabled:
        return None
    import keras

    fill = config.fill_mode
    layers: list = []
    if config.horizontal_flip or config.vertical_flip:
        mode = {(True, True): "horizontal_and_vertical", (True, False): "horizontal", (False, True): "vertical"}
        layers.append(keras.layers.RandomFlip(mode[(config.horizontal_flip, config.vertical_flip)], seed=seed))
    if config.rotation_degrees:
        layers.append(keras.layers.RandomRotation(config.rotation_degrees / 360.0, fill_mode=fill, seed=seed + 1))
    if config.width_shift or config.height_shift:
        layers.append(keras.layers.RandomTranslation(
            config.height_shift, config.width_shift, fill_mode=fill, seed=seed + 2))
    if config.shear_degrees:
        # RandomShear takes the shear as a tangent, the classic setting is an angle.
        factor = math.tan(math.radians(config.shear_degrees))
        layers.append(keras.layers.RandomShear(x_factor=factor, y_factor=0.0, fill_mode=fill, seed=seed + 3))
    if config.zoom:
        layers.append(keras.layers.RandomZoom((-config.zoom, config.zoom), fill_mode=fill, seed=seed + 4))
    return keras.Sequential(layers, name="augmentation")


def preview_grid(images, augmenter, n_variants: int, out_path: str, titles: Optional[list[str]] = None) -> None:
    """Save a PNG grid: one row per image, the original then `n_variants` augmented versions.

    `images` is a uint8 array (N, H, W, 3). With `augmenter` None every variant equals the original.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n_rows = len(images)
    figure, axes = plt.subplots(n_rows, n_variants + 1, figsize=(1.6 * (n_variants + 1), 1.6 * n_rows), squeeze=False)
    for row, image in enumerate(images):
        batch = np.repeat(image[None].astype("float32"), n_variants, axis=0)
        variants = batch if augmenter is None else np.asarray(augmenter(batch, training=True))
        cells = [image] + [np.clip(variant, 0, 255).astype("uint8") for variant in variants]
        for column, cell in enumerate(cells):
            axis = axes[row][column]
            axis.imshow(cell)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("original" if column == 0 else f"#{column}", fontsize=8)
        if titles:
            axes[row][0].set_ylabel(titles[row], fontsize=7)
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
