"""Pretrained backbones: `keras.applications` families and user model files, each with its own
input preprocessing inside the graph.

Every backbone built here takes float32 RGB pixels in [0, 255] and returns a feature vector
(N, features). The preprocessing layer in front of it maps [0, 255] to the range its family was
trained on:

| family | range at the backbone input | done by |
|---|---|---|
| MobileNetV2 | [-1, 1] | `Rescaling(1/127.5, offset=-1)` added here |
| MobileNetV3Small, MobileNetV3Large | [0, 255] | the family's own built-in rescaling layer |
| EfficientNetB0 | [0, 255] | the family's own built-in rescaling and normalization |
| EfficientNetV2B0 | [0, 255] | the family's own built-in preprocessing |
| ResNet50 | BGR minus the ImageNet mean ("caffe") | a fixed 1x1 convolution added here |
| model file | whatever `backbone.preprocessing` says (default: the file takes [0, 255]) | |

All of these are standard Keras layers, so a saved model loads with `safe_mode=True` and needs
no custom objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from imgclf.errors import ConfigError, ModelError

# Family name -> (keras.applications constructor, preprocessing imgclf adds in front of it).
FAMILIES = {
    "MobileNetV2": ("MobileNetV2", "minus_one_to_one"),
    "MobileNetV3Small": ("MobileNetV3Small", "none"),
    "MobileNetV3Large": ("MobileNetV3Large", "none"),
    "EfficientNetB0": ("EfficientNetB0", "none"),
    "EfficientNetV2B0": ("EfficientNetV2B0", "none"),
    "ResNet50": ("ResNet50", "caffe"),
}
PREPROCESSING = ("none", "zero_to_one", "minus_one_to_one", "caffe")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass
class Backbone:
    """A feature extractor and the layer that prepares its input."""

    model: object  # keras.Model: (N, H, W, 3) preprocessed pixels -> (N, features)
    preprocessing: str
    name: str


def preprocessing_layer(kind: str, name: str = "backbone_preprocess"):
    """A standard Keras layer mapping RGB [0, 255] to the range `kind` names, or None for `none`."""
    import keras

    if kind == "none":
        return None
    if kind == "zero_to_one":
        return keras.layers.Rescaling(1.0 / 255.0, name=name)
    if kind == "minus_one_to_one":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    if kind == "caffe":
        # RGB -> BGR and minus the ImageNet mean, as keras.applications.resnet50.preprocess_input.
        layer = keras.layers.Conv2D(3, 1, name=name, trainable=False)
        layer.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for output_channel, input_channel in enumerate((2, 1, 0)):
            kernel[0, 0, input_channel, output_channel] = 1.0
        layer.set_weights([kernel, -np.array(CAFFE_MEAN_BGR, np.float32)])
        return layer
    raise ConfigError(f"backbone preprocessing {kind!r} is not one of {', '.join(PREPROCESSING)}")


def _family_backbone(family: str, weights: str, image_size: tuple[int, int]):
    import keras

    constructor, preprocessing = FAMILIES[family]
    build = getattr(keras.applications, constructor)
    weight_arg: Optional[str] = None if weights == "none" else weights
    if weights not in ("none", "imagenet") and not Path(weights).is_file():
        raise ConfigError(f"model.weights = {weights!r}: weights file not found; use imagenet, none or a file path")
    kwargs = dict(include_top=False, weights=weight_arg, input_shape=(*image_size, 3), pooling="avg")
    try:
        model = build(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"model.backbone = {family!r} cannot be built at data.image_size {list(image_size)}: {exc}") from None
    except Exception as exc:  # get_file raises plain Exception when a download fails
        if "URL fetch failure" in str(exc) or "HTTP" in str(exc):
            raise ModelError(
                f"the ImageNet weights of {family} are not in Keras' cache ($KERAS_HOME/models or ~/.keras/models) "
                f"and the download failed ({exc}); copy the weights file there, or set model.weights to a file"
            ) from None
        raise
    model.trainable = True
    return keras.Model(model.input, model.output, name=family.lower()), preprocessing


def _patched_depthwise_conv():
    """DepthwiseConv2D that accepts the `groups` argument Keras 2 wrote into `.h5` configs."""
    import keras

    class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
        def __init__(self, *args, groups=None, **kwargs):
            super().__init__(*args, **kwargs)

    return DepthwiseConv2D


def load_model_file(path: str):
    """Load a `.keras` model, or a Keras 2 `.h5` one, including configs Keras 3 would reject for
    a `groups` argument on DepthwiseConv2D."""
    import keras

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model.backbone.path = {path!r}: model file not found")
    try:
        if file.suffix.lower() in (".h5", ".hdf5"):
            custom = {"DepthwiseConv2D": _patched_depthwise_conv()}
            return keras.saving.load_model(file, compile=False, custom_objects=custom)
        return keras.saving.load_model(file, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: cannot be loaded as a Keras model ({exc})") from None


def _file_backbone(path: str, feature_layer: Optional[str], preprocessing: str, image_size: tuple[int, int]):
    import keras

    source = load_model_file(path)
    if feature_layer:
        try:
            output = source.get_layer(feature_layer).output
        except ValueError:
            names = [layer.name for layer in source.layers][-8:]
            raise ConfigError(
                f"model.backbone.feature_layer = {feature_layer!r} is not a layer of {path}; "
                f"its last layers are {', '.join(names)}"
            ) from None
    else:
        output = source.outputs[0]
    if len(output.shape) == 4:
        output = keras.layers.GlobalAveragePooling2D(name="backbone_pool")(output)
    elif len(output.shape) != 2:
        raise ConfigError(f"{path}: layer output of shape {tuple(output.shape)} is not a feature map or vector")
    expected = tuple(source.inputs[0].shape[1:3])
    if None not in expected and expected != tuple(image_size):
        raise ConfigError(
            f"{path} takes {expected[0]}x{expected[1]} images, but data.image_size is {list(image_size)}; "
            f"set data.image_size: [{expected[0]}, {expected[1]}]"
        )
    model = keras.Model(source.inputs, output, name=Path(path).stem.replace(".", "_"))
    return model, preprocessing


def build_backbone(spec, weights: str, image_size: tuple[int, int]) -> Backbone:
    """Build the backbone that `model.backbone` describes: a family name or {path, feature_layer, preprocessing}."""
    if isinstance(spec, str):
        model, preprocessing = _family_backbone(spec, weights, image_size)
        return Backbone(model, preprocessing, spec)
    model, preprocessing = _file_backbone(spec.path, spec.feature_layer, spec.preprocessing, image_size)
    return Backbone(model, preprocessing, Path(spec.path).name)


def describe_preprocessing(kind: str) -> str:
    """One sentence for run records: what happens to [0, 255] pixels before the backbone."""
    return {
        "none": "pixels in [0, 255] go to the backbone as they are (it rescales them itself)",
        "zero_to_one": "pixels are scaled to [0, 1]",
        "minus_one_to_one": "pixels are scaled to [-1, 1]",
        "caffe": "RGB is reordered to BGR and the ImageNet mean (103.939, 116.779, 123.68) subtracted",
    }[kind]

