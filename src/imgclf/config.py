"""Run configuration: the YAML schema, its validation, and KEY=VALUE overrides.

A config is validated once, in `load_config`; everything downstream trusts it. Unknown keys
are errors that name the dotted key, the file and the nearest valid key.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgclf.errors import ConfigError
from imgclf.constants import DEFAULT_MAX_PIXELS, DEFAULT_NEAR_DISTANCE


class _Section(BaseModel):
    # Numbers given for text keys (a folder named 2024) become strings; NaN and infinity are rejected.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True, allow_inf_nan=False)


class DataConfig(_Section):
    path: str = Field(min_length=1, description="A split folder written by `imgclf split`, a dataset root of class folders, or a manifest.")
    image_size: tuple[int, int] = Field((64, 64), description="Model input (height, width) in pixels; one int for a square.")
    split_ratios: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="Train, val, test shares for a root that is split on the fly.")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Largest width x height decoded; larger files are skipped.")
    cache_dir: Optional[str] = Field(None, description="Where decoded, resized images are cached; default ~/.cache/imgclf.")
    drop_empty_classes: bool = False
    near_duplicate_distance: Optional[int] = Field(DEFAULT_NEAR_DISTANCE, ge=0, le=32, description="Perceptual-hash bits within which images count as near duplicates and share a split; null turns it off.")
    group_by: Optional[str] = Field(None, description="Regular expression on paths relative to the root; images with the same match (first group) share a split.")

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) != 2:
            raise ValueError(f"expected one int or [height, width], got {list(value)}")
        return value

    @field_validator("path", "cache_dir")
    @classmethod
    def _expand_home(cls, value: Optional[str]) -> Optional[str]:
        return os.path.expanduser(value) if value else value

    @field_validator("image_size")
    @classmethod
    def _image_size_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not all(8 <= side <= 2048 for side in value):
            raise ValueError(f"each side must be between 8 and 2048 pixels, got {list(value)}")
        return value

    @field_validator("split_ratios")
    @classmethod
    def _ratios_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or value[0] <= 0:
            raise ValueError(f"ratios must be non-negative with a positive train share, got {list(value)}")
        if abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"ratios must sum to 1, got {list(value)} (sum {sum(value):g})")
        return value


BACKBONE_FAMILIES = Literal[
    "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "EfficientNetV2B0", "ResNet50",
]


class BackboneFileConfig(_Section):
    path: str = Field(description="A .keras or Keras 2 .h5 model file to use as the backbone.")
    feature_layer: Optional[str] = Field(None, description="Layer whose output is the feature vector or map; default the model's output.")
    preprocessing: Literal["none", "zero_to_one", "minus_one_to_one", "caffe"] = Field(
        "none", description="What the file expects instead of RGB in [0, 255]; none when it rescales inside.")


class ModelConfig(_Section):
    name: Optional[Literal["simple_cnn", "small_cnn"]] = Field(None, description="simple_cnn: the classic Conv32-Pool-Conv64-Pool-Dense64; small_cnn (the default without a backbone): a stronger CNN with batch normalization.")
    backbone: Optional[Union[BACKBONE_FAMILIES, BackboneFileConfig]] = Field(None, description="A keras.applications family, or {path, feature_layer, preprocessing} for a model file.")
    weights: str = Field("imagenet", description="Family backbones: imagenet (Keras' download cache), none, or a weights file.")
    fine_tune_layers: Union[int, str] = Field(20, description="Layers unfrozen at the top of the backbone for fine-tuning: a count, or the name of the first one.")
    filters: tuple[int, ...] = Field((32, 64, 128), description="small_cnn: filters of each convolution block.")
    dropout: float = Field(0.3, ge=0.0, lt=1.0)

    @field_validator("filters")
    @classmethod
    def _filters_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(count < 1 for count in value):
            raise ValueError(f"expected one or more positive filter counts, got {list(value)}")
        return value

    @field_validator("fine_tune_layers")
    @classmethod
    def _layers_non_negative(cls, value: Union[int, str]) -> Union[int, str]:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"expected a layer count of 0 or more, or a layer name, got {value}")
        return value

    @model_validator(mode="after")
    def _name_or_backbone(self) -> "ModelConfig":
        if self.name is not None and self.backbone is not None:
            raise ValueError(f"set model.name ({self.name}) or model.backbone, not both")
        return self

    @property
    def architecture(self) -> str:
        """simple_cnn, small_cnn, or 'backbone'."""
        if self.backbone is not None:
            return "backbone"
        return self.name or "small_cnn"

    @property
    def pretrained(self) -> bool:
        """True for a backbone whose weights come from training elsewhere (so it is frozen first)."""
        return self.backbone is not None and (not isinstance(self.backbone, str) or self.weights != "none")


class AugmentationConfig(_Section):
    rotation_degrees: float = Field(0.0, ge=0.0, le=180.0)
    width_shift: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the width.")
    height_shift: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the height.")
    shear_degrees: float = Field(0.0, ge=0.0, le=45.0, description="At most 45: Keras' RandomShear takes the tangent, limited to 1.")
    zoom: float = Field(0.0, ge=0.0, lt=1.0, description="Zoom range: scale drawn from [1 - zoom, 1 + zoom].")
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: Literal["constant", "nearest", "reflect", "wrap"] = "nearest"

    @property
    def enabled(self) -> bool:
        return any((self.rotation_degrees, self.width_shift, self.height_shift, self.shear_degrees,
                    self.zoom, self.horizontal_flip, self.vertical_flip))


class TrainConfig(_Section):
    epochs: int = Field(20, ge=1, le=10_000, description="Epochs from scratch, or of the frozen-backbone phase.")
    fine_tune_epochs: int = Field(5, ge=0, le=10_000, description="Epochs after unfreezing the top of a pretrained backbone; 0 skips fine-tuning.")
    batch_size: int = Field(32, ge=1, le=65_536)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    fine_tune_learning_rate: Optional[float] = Field(None, gt=0.0, le=10.0, description="Default: learning_rate / 10.")
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0, description="Linear warm-up from 0 at the start of each phase, in epochs.")
    label_smoothing: float = Field(0.0, ge=0.0, le=0.5)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="adamw and sgd only.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd only.")
    class_weight: Union[Literal["none", "auto"], dict[str, float]] = Field("none", description="auto: inversely proportional to class frequency; or {class: weight}.")
    imbalance_warning_ratio: float = Field(10.0, ge=1.0, description="Warn when the largest class outnumbers the smallest by more than this.")
    early_stopping_patience: int = Field(5, ge=0, description="Epochs without improvement before stopping; 0 turns it off.")
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    top_k: int = Field(3, ge=2, description="k of the top-k accuracy metric, reported when there are more than k classes.")
    feature_cache: bool = Field(True, description="Train a frozen backbone's head on features computed once, when no augmentation is on.")
    mixed_precision: Literal["none", "bfloat16"] = "none"
    deterministic: bool = Field(True, description="Turn on TensorFlow op determinism, so a seed reproduces a CPU run exactly.")
    distribute: Literal["none", "mirrored", "multi_worker_mirrored"] = Field(
        "none", description="mirrored: tf.distribute.MirroredStrategy over the local devices; multi_worker_mirrored: "
        "MultiWorkerMirroredStrategy over the machines that TF_CONFIG lists.")

    @field_validator("class_weight")
    @classmethod
    def _weights_positive(cls, value):
        if isinstance(value, dict) and any(weight <= 0 for weight in value.values()):
            raise ValueError(f"class weights must be positive, got {value}")
        return value


class OutputConfig(_Section):
    runs_dir: str = Field("runs", description="Folder under which each run gets its own directory.")
    name: Optional[str] = Field(None, description="Run directory name; default <config name>-<timestamp>.")
    tensorboard: bool = True


class MlflowConfig(_Section):
    tracking_uri: str = Field(description="Where MLflow stores runs, e.g. sqlite:///mlflow.db or http://mlflow.internal:5000.")
    experiment: str = Field("imgclf", description="MLflow experiment name, created when missing.")
    run_name: Optional[str] = Field(None, description="MLflow run name; default the run directory's name.")
    artifact_location: Optional[str] = Field(None, description="Artifact root for a new experiment; default mlartifacts/ beside a SQLite file.")


class TrackingConfig(_Section):
    mlflow: Optional[MlflowConfig] = Field(None, description="Log to MLflow (needs `pip install imgclf[mlflow]`).")


class RunConfig(_Section):
    seed: int = Field(42, ge=0, le=2**31 - 1)
    data: DataConfig
    model: ModelConfig = ModelConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    train: TrainConfig = TrainConfig()
    output: OutputConfig = OutputConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _image_size_fits_model(self) -> "RunConfig":
        # simple_cnn's two unpadded 3x3 convolutions and 2x2 poolings need at least 10 pixels per side.
        smallest = {"simple_cnn": 10, "backbone": 32 if isinstance(self.model.backbone, str) else 1}
        minimum = smallest.get(self.model.architecture, 1)
        if min(self.data.image_size) < minimum:
            raise ValueError(f"data.image_size {list(self.data.image_size)} is too small for "
                             f"{self.model.backbone or self.model.architecture}; use at least {minimum}")
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _section_types(annotation) -> list[type[BaseModel]]:
    """The config sections an annotation allows, looking inside Optional and Union."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [member for arg in typing.get_args(annotation) for member in _section_types(arg)]


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        for section in _section_types(info.annotation):
            keys.extend(_valid_keys(section, dotted + "."))
    return keys


def _nearest_key(dotted: str) -> Optional[str]:
    candidates = _valid_keys(RunConfig)
    section, _, leaf = dotted.rpartition(".")
    leaves = {key.rpartition(".")[2]: key for key in candidates}
    if leaf in leaves:
        # The right key in the wrong section.
        return leaves[leaf]
    same_section = [key for key in candidates if key.rpartition(".")[0] == section]
    match = difflib.get_close_matches(dotted, same_section, n=1, cutoff=0.6)
    if match:
        return match[0]
    leaf_match = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
    return leaves[leaf_match[0]] if leaf_match else None


def _clean_location(loc: tuple) -> str:
    """Dotted key of a pydantic error location, without the union-member tags pydantic inserts."""
    parts = []
    for part in loc:
        text = str(part)
        if text.startswith(("literal[", "function-", "dict[", "tuple[")) or text in ("str", "int", "float", "bool") \
                or (text[:1].isupper() and text.endswith("Config")):
            continue
        parts.append(text)
    return ".".join(parts)


def _format_errors(errors: list[dict], source: str) -> list[str]:
    lines: list[str] = []
    invalid: dict[str, tuple[object, list[str]]] = {}
    for error in errors:
        dotted = _clean_location(error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            nearest = _nearest_key(dotted)
            hint = f"; did you mean {nearest!r}?" if nearest else ""
            lines.append(f"{source}: unknown key {dotted!r}{hint}")
        elif kind == "missing":
            lines.append(f"{source}: missing required key {dotted!r}")
        else:
            value = error.get("input")
            # A union reports one error per member; keep those about the kind of value given.
            if kind == "literal_error" and isinstance(value, dict):
                continue
            if kind in ("model_type", "dict_type") and not isinstance(value, dict) and len(errors) > 1:
                continue
            message = error["msg"].removeprefix("Value error, ")
            if kind == "value_error" and isinstance(value, dict):
                # A check across keys (model or config level): the message names the keys itself.
                lines.append(f"{source}: {message}")
                continue
            value, messages = invalid.setdefault(dotted or "config", (error.get("input"), []))
            if message not in messages:
                messages.append(message)
    for dotted, (value, messages) in invalid.items():
        lines.append(f"{source}: {dotted} = {value!r} is invalid: {'; or '.join(messages)}")
    return lines


def validate_config(raw: dict, source: str) -> RunConfig:
    """Validate a config mapping; `source` names the file in error messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, augmentation, train, output)")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_errors(exc.errors(), source))) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split 'train.epochs=3' into (['train', 'epochs'], 3); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example train.epochs=3")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of `raw` with each KEY=VALUE override set at its dotted key."""
    import copy

    result = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        target = result
        for part in keys[:-1]:
            child = target.get(part)
            if child is None:
                child = target[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            target = child
        target[keys[-1]] = value
    return result


def read_yaml(path: Union[str, os.PathLike]) -> dict:
    """Read a YAML mapping from `path`; an empty file reads as {}."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = file.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise ConfigError(f"{path}: invalid YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    return raw if raw is not None else {}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: Union[str, os.PathLike], overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a run config.

    Relative `data.path`, `data.cache_dir` and `output.runs_dir` values from the file are
    taken relative to the current directory, as on the command line.

    Raises:
        ConfigError: naming the file and the dotted key at fault.
    """
    raw = apply_overrides(read_yaml(path), overrides)
    source = str(path) + (" (with overrides)" if overrides else "")
    return validate_config(raw, source)


def save_config(config: RunConfig, path: Union[str, os.PathLike]) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), "utf-8")
