"""Model builders. Every model takes raw RGB pixels and resizes and rescales them itself.

Input: float32 or uint8 batch (N, H, W, 3), values in [0, 255], any H and W.
Output: float32 (N, n_classes) softmax probabilities, index i meaning `classes[i]`.
A two-class problem uses a two-unit softmax, which is equivalent to one sigmoid unit with
binary cross-entropy and keeps one probability per class for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
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
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@dataclass
class ModelParts:
    """The end-to-end model and, for a backbone, the pieces training works on separately.

    `model` maps raw pixels to probabilities. With a backbone, `features` maps raw pixels to
    the backbone's feature vector and `head` maps that vector to probabilities; `model` calls
    both, so training `head` alone trains `model`'s head too.
    """

    model: object
    backbone: object = None
    features: object = None
    head: object = None
    preprocessing: str = "rescale to [0, 1]"


def _head(n_features: int, n_classes: int, dropout: float):
    import keras
    from keras import layers

    head_layers = [keras.Input((n_features,), name="features")]
    if dropout:
        head_layers.append(layers.Dropout(dropout, name="head_dropout"))
    head_layers.append(layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities"))
    return keras.Sequential(head_layers, name="head")


def build_backbone_model(config: ModelConfig, image_size: tuple[int, int], n_classes: int) -> ModelParts:
    """Raw pixels -> resize -> the backbone family's own preprocessing -> backbone -> dropout -> softmax.

    The backbone is always called with `training=False`, so its BatchNormalization layers use
    their moving statistics even while unfrozen for fine-tuning.
    """
    import keras

    from imgclf.backbones import build_backbone, describe_preprocessing, preprocessing_layer

    backbone = build_backbone(config.backbone, config.weights, image_size)
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = keras.layers.Resizing(image_size[0], image_size[1], interpolation="bilinear", antialias=True, name="resize")(inputs)
    prepare = preprocessing_layer(backbone.preprocessing)
    if prepare is not None:
        x = prepare(x)
    # A pretrained backbone keeps BatchNormalization on its moving statistics; one trained from
    # scratch must update them.
    features = backbone.model(x, training=False) if config.pretrained else backbone.model(x)
    head = _head(int(features.shape[-1]), n_classes, config.dropout)
    outputs = head(features)
    model = keras.Model(inputs, outputs, name=f"{backbone.name.lower()}_classifier")
    feature_model = keras.Model(inputs, features, name="feature_extractor")
    return ModelParts(model, backbone.model, feature_model, head, describe_preprocessing(backbone.preprocessing))


def set_backbone_trainable(backbone, fine_tune_layers) -> int:
    """Freeze the backbone except its top layers; BatchNormalization layers stay frozen.

    `fine_tune_layers` is a count of layers from the top, or the name of the first layer to
    unfreeze. Returns the number of layers left trainable.

    Raises:
        ConfigError: for a layer name the backbone does not have.
    """
    from keras import layers

    from imgclf.errors import ConfigError

    all_layers = backbone.layers
    if isinstance(fine_tune_layers, str):
        names = [layer.name for layer in all_layers]
        if fine_tune_layers not in names:
            raise ConfigError(
                f"model.fine_tune_layers = {fine_tune_layers!r} is not a layer of {backbone.name}; "
                f"its last layers are {', '.join(names[-8:])}"
            )
        first = names.index(fine_tune_layers)
    else:
        first = max(0, len(all_layers) - fine_tune_layers)
    backbone.trainable = True
    count = 0
    for index, layer in enumerate(all_layers):
        layer.trainable = index >= first and not isinstance(layer, layers.BatchNormalization)
        count += int(layer.trainable and bool(layer.weights))
    return count


def build_model(config: ModelConfig, image_size: tuple[int, int], n_classes: int):
    """Build the end-to-end Keras model that `config` describes."""
    return build_model_parts(config, image_size, n_classes).model


def build_model_parts(config: ModelConfig, image_size: tuple[int, int], n_classes: int) -> ModelParts:
    """Build the model that `config` describes: a backbone classifier, simple_cnn or small_cnn."""
    if config.architecture == "backbone":
        return build_backbone_model(config, image_size, n_classes)
    if config.architecture == "simple_cnn":
        return ModelParts(build_simple_cnn(image_size, n_classes))
    return ModelParts(build_small_cnn(image_size, n_classes, config.filters, config.dropout))
