"""Model builders. Every model takes raw RGB pixels and resizes and rescales them itself.

Input: float32 or uint8 batch (N, H, W, 3), values in [0, 255], any H and W.
Output: float32 (N, n_classes) softmax probabilities, index i meaning `classes[i]`.
A two-class problem uses a two-unit softmax, which is equivalent to one sigmoid unit with
binary cross-entropy and keeps one probability per class for every caller.
"""

from __future__ import annotations

from imgclf.config import ModelConfig


def _input_block(image_size: tuple[int, int]):
    import keras

    inputs = keras.Input(shape=(None, None, 3), name="image")
    height, width = image_size
    x = keras.layers.Resizing(height, width, interpolation="bilinear", antialias=True, name="resize")(inputs)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    return inputs, x


def build_simple_cnn(image_size: tuple[int, int], n_classes: int):
    """The classic tutorial CNN: Conv32-Pool-Conv64-Pool-Flatten-Dense64-softmax."""
    import keras
    from keras import layers

    inputs, x = _input_block(image_size)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def build_small_cnn(image_size: tuple[int, int], n_classes: int, filters=(32, 64, 128), dropout: float = 0.3):
    """A small CNN: per block two 3x3 Conv-BatchNorm-ReLU layers and 2x2 max pooling, then global pooling."""
    import keras
    from keras import layers

    inputs, x = _input_block(image_size)
    for block, count in enumerate(filters):
        for step in range(2):
            x = layers.Conv2D(count, 3, padding="same", use_bias=False, name=f"block{block}_conv{step}")(x)
            x = layers.BatchNormalization(name=f"block{block}_bn{step}")(x)
            x = layers.ReLU(name=f"block{block}_relu{step}")(x)
        if min(x.shape[1], x.shape[2]) >= 4:
            x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def build_model(config: ModelConfig, image_size: tuple[int, int], n_classes: int):
    """Build the model that `config.name` names."""
    if config.name == "simple_cnn":
        return build_simple_cnn(image_size, n_classes)
    return build_small_cnn(image_size, n_classes, config.filters, config.dropout)
