"""Transfer learning: backbones, their preprocessing, the two-phase recipe and the training engine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_dataset, shared_path, write_config
from imgclf.cli.main import app
from imgclf.config import ModelConfig, validate_config

runner = CliRunner()
LITE0 = ("weights", "efficientnet_lite0_imagenet.keras")

# Values the first convolution of each family receives for black and white pixels.
EXPECTED_RANGE = {
    "MobileNetV2": ([-1.0] * 3, [1.0] * 3),
    "MobileNetV3Small": ([-1.0] * 3, [1.0] * 3),
    "MobileNetV3Large": ([-1.0] * 3, [1.0] * 3),
    "EfficientNetB0": ([0.0] * 3, [1.0] * 3),  # its Normalization layer holds the ImageNet statistics only with weights
    "EfficientNetV2B0": ([-2.118, -2.036, -1.804], [2.249, 2.429, 2.640]),
    "ResNet50": ([-103.939, -116.779, -123.68], [151.061, 138.221, 131.32]),
}


def _canary(size=32):
    """Black, white, mid-grey and pure red quadrants."""
    image = np.zeros((1, size, size, 3), np.float32)
    half = size // 2
    image[0, :half, half:] = 255
    image[0, half:, :half] = 128
    image[0, half:, half:] = (255, 0, 0)
    return image


def _values_at_first_layer(parts, pixels):
    import keras

    backbone = parts.backbone
    first = next(layer for layer in backbone.layers if type(layer).__name__ in ("Conv2D", "ZeroPadding2D"))
    inner = keras.Model(backbone.input, first.input)
    x = pixels
    for layer in parts.model.layers:
        if layer.name in ("resize", "backbone_preprocess"):
            x = layer(x)
    return np.asarray(inner(x))


@pytest.mark.parametrize("family", sorted(EXPECTED_RANGE))
def test_backbone_canary_reaches_family_range(family):
    from imgclf.models import build_model_parts

    parts = build_model_parts(ModelConfig(backbone=family, weights="none"), (32, 32), 2)
    values = _values_at_first_layer(parts, _canary())
    black, white = EXPECTED_RANGE[family]
    np.testing.assert_allclose(values[0, 0, 0], black, atol=2e-3)
    np.testing.assert_allclose(values[0, 0, 31], white, atol=2e-3)
    red = values[0, 31, 31]
    assert red[0] == pytest.approx(white[0] if family != "ResNet50" else black[0], abs=2e-3)


def test_lite0_file_backbone_keeps_its_own_preprocessing():
    from imgclf.models import build_model_parts

    path = shared_path(*LITE0)
    config = ModelConfig(backbone={"path": str(path), "feature_layer": "avg_pool"})
    parts = build_model_parts(config, (224, 224), 2)
    assert "backbone_preprocess" not in [layer.name for layer in parts.model.layers]
    assert parts.features.output_shape == (None, 1280)
    rescale = next(layer for layer in parts.backbone.layers if layer.name == "preprocess")
    import keras

    probe = keras.Model(parts.backbone.input, rescale.output)
    values = np.asarray(probe(_canary(224)))
    assert values[0, 0, 0, 0] == pytest.approx(-127 / 128)
    assert values[0, 0, 223, 0] == pytest.approx(1.0)


def test_file_backbone_rejects_unknown_feature_layer():
    from imgclf.errors import ConfigError
    from imgclf.models import build_model_parts

    path = shared_path(*LITE0)
    with pytest.raises(ConfigError, match=r"feature_layer = 'pool5' is not a layer of .*its last layers are"):
        build_model_parts(ModelConfig(backbone={"path": str(path), "feature_layer": "pool5"}), (224, 224), 2)


def test_file_backbone_rejects_other_image_size():
    from imgclf.errors import ConfigError
    from imgclf.models import build_model_parts

    path = shared_path(*LITE0)
    with pytest.raises(ConfigError, match=r"takes 224x224 images, but data\.image_size is \[96, 96\]"):
        build_model_parts(ModelConfig(backbone={"path": str(path), "feature_layer": "avg_pool"}), (96, 96), 2)


def test_plan_phases_uses_feature_cache_only_without_augmentation():
    from imgclf.training import plan_phases

    base = {"data": {"path": "p"}, "model": {"backbone": "MobileNetV2"}, "train": {"epochs": 4, "fine_tune_epochs": 2}}
    plain = plan_phases(validate_config(base, "test"))
    augmented = plan_phases(validate_config(dict(base, augmentation={"horizontal_flip": True}), "test"))
    scratch = plan_phases(validate_config(dict(base, model={"backbone": "MobileNetV2", "weights": "none"}), "test"))
    assert [(phase.name, phase.epochs, phase.feature_cache) for phase in plain] == [("frozen", 4, True), ("fine_tune", 2, False)]
    assert augmented[0].feature_cache is False
    assert plain[1].learning_rate == pytest.approx(1e-4)
    assert [phase.name for phase in scratch] == ["scratch"]


def test_set_backbone_trainable_keeps_batchnorm_frozen():
    from imgclf.models import build_model_parts, set_backbone_trainable

    parts = build_model_parts(ModelConfig(backbone="MobileNetV2", weights="none"), (32, 32), 2)
    set_backbone_trainable(parts.backbone, 10)
    trainable = [layer for layer in parts.backbone.layers if layer.trainable]
    assert trainable
    assert all(type(layer).__name__ != "BatchNormalization" for layer in trainable)
    assert all(layer in parts.backbone.layers[-10:] for layer in trainable)


def test_set_backbone_trainable_by_layer_name():
    from imgclf.errors import ConfigError
    from imgclf.models import build_model_parts, set_backbone_trainable

    parts = build_model_parts(ModelConfig(backbone="MobileNetV2", weights="none"), (32, 32), 2)
    set_backbone_trainable(parts.backbone, "block_16_project")
    assert parts.backbone.get_layer("block_16_project").trainable
    assert not parts.backbone.get_layer("block_15_project").trainable
    with pytest.raises(ConfigError, match=r"fine_tune_layers = 'nope' is not a layer"):
        set_backbone_trainable(parts.backbone, "nope")


def test_class_weights_auto_balances_counts():
    from imgclf.training import class_weights

    config = validate_config({"data": {"path": "p"}, "train": {"class_weight": "auto"}}, "test")
    weights = class_weights(config, ["a", "b"], np.array([0, 0, 0, 1]))
    assert weights == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


def test_class_weights_reject_unknown_class():
    from imgclf.errors import ConfigError
    from imgclf.training import class_weights

    config = validate_config({"data": {"path": "p"}, "train": {"class_weight": {"cta": 2}}}, "test")
    with pytest.raises(ConfigError, match=r"unknown class\(es\) 'cta'; the classes are a, b"):
        class_weights(config, ["a", "b"], np.array([0, 1]))


def test_nonfinite_loss_guard_names_epoch_and_step():
    from imgclf.training_callbacks import NonFiniteLossGuard

    class Model:
        stop_training = False

    guard = NonFiniteLossGuard()
    guard.set_model(Model())
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(6, {"loss": float("nan")})
    assert "at epoch 3, step 7" in guard.failure
    assert guard.model.stop_training is True


@pytest.mark.slow
def test_transfer_run_frozen_then_fine_tune_keeps_bn_statistics(tmp_path):
    import keras

    lite0 = shared_path(*LITE0)
    root = make_dataset(tmp_path / "photos", per_class=8, size=(40, 40))
    config = write_config(
        tmp_path / "c.yaml", root, tmp_path / "runs",
        data={"image_size": 224},
        model={"backbone": {"path": str(lite0), "feature_layer": "avg_pool"}, "fine_tune_layers": 6, "dropout": 0.1},
        train={"epochs": 2, "fine_tune_epochs": 1, "learning_rate": 0.01}, output={"name": "lite"},
    )
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "lite"
    record = json.loads((run / "run.json").read_text())
    assert [phase["name"] for phase in record["training"]["phases"]] == ["frozen", "fine_tune"]
    assert record["training"]["phases"][0]["feature_cache"] is True
    assert [row["phase"] for row in json.loads((run / "history.json").read_text())] == ["frozen", "frozen", "fine_tune"]

    trained = keras.saving.load_model(run / "model.keras", safe_mode=True)
    original = keras.saving.load_model(lite0, safe_mode=True)
    for name in ("head_bn", "block7a_project_bn"):
        backbone = next(layer for layer in trained.layers if isinstance(layer, keras.Model) and layer.name != "head")
        got = backbone.get_layer(name).moving_mean.numpy()
        np.testing.assert_array_equal(got, original.get_layer(name).moving_mean.numpy())


@pytest.mark.slow
def test_seeded_runs_give_identical_weights(tmp_path):
    import keras

    root = make_dataset(tmp_path / "photos", per_class=6)
    weights = []
    for name in ("first", "second"):
        config = write_config(tmp_path / f"{name}.yaml", root, tmp_path / "runs", output={"name": name},
                              train={"epochs": 2}, augmentation={"horizontal_flip": True, "rotation_degrees": 10})
        assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
        model = keras.saving.load_model(tmp_path / "runs" / name / "model.keras")
        weights.append(model.get_weights())
    for first, second in zip(*weights):
        np.testing.assert_array_equal(first, second)
    histories = [json.loads((tmp_path / "runs" / name / "history.json").read_text()) for name in ("first", "second")]
    assert histories[0] == histories[1]


@pytest.mark.slow
def test_label_smoothing_and_class_weight_train(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    config = write_config(tmp_path / "c.yaml", root, tmp_path / "runs", output={"name": "smooth"},
                          train={"epochs": 1, "label_smoothing": 0.1, "class_weight": "auto", "warmup_epochs": 0.5,
                                 "lr_schedule": "cosine", "optimizer": "adamw", "weight_decay": 0.01})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output


def test_prefilled_keras_cache_provides_imagenet_weights(tmp_path):
    """MobileNetV2's ImageNet weights come from $KERAS_HOME/models, as Keras downloads them there."""
    keras_home = tmp_path / "keras_home"
    (keras_home / "models").mkdir(parents=True)
    weights_file = keras_home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    code = f"""
import h5py, keras, numpy as np
from keras.src.legacy.saving import legacy_h5_format
donor = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(96, 96, 3))
donor.get_layer("Conv1").kernel.assign(np.full(donor.get_layer("Conv1").kernel.shape, 0.125, "float32"))
with h5py.File({str(weights_file)!r}, "w") as handle:
    legacy_h5_format.save_weights_to_hdf5_group(handle, donor)
from imgclf.backbones import build_backbone
backbone = build_backbone("MobileNetV2", "imagenet", (96, 96))
print(float(backbone.model.get_layer("Conv1").kernel.numpy().mean()))
"""
    env = dict(os.environ, KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "0.125"


def test_legacy_h5_with_depthwise_groups_loads(tmp_path):
    import h5py
    import keras

    from imgclf.backbones import load_model_file

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    path = tmp_path / "legacy.h5"
    keras.Model(inputs, outputs).save(path)
    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "DepthwiseConv2D":
                layer["config"]["groups"] = 1  # what Keras 2 wrote
        handle.attrs["model_config"] = json.dumps(config)
    with pytest.raises((TypeError, ValueError)):
        keras.saving.load_model(path, compile=False)
    model = load_model_file(str(path))
    assert model.get_layer("depthwise").kernel.shape == (3, 3, 3, 1)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["mirrored", "multi_worker_mirrored"])
def test_distribution_strategies_train_on_one_machine(tmp_path, strategy):
    root = make_dataset(tmp_path / "photos", per_class=6)
    config = write_config(tmp_path / "c.yaml", root, tmp_path / "runs", output={"name": strategy},
                          train={"epochs": 1, "distribute": strategy})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "runs" / strategy / "model.keras").is_file()


@pytest.mark.slow
def test_bfloat16_training_keeps_float32_outputs(tmp_path):
    import keras

    root = make_dataset(tmp_path / "photos", per_class=6)
    config = write_config(tmp_path / "c.yaml", root, tmp_path / "runs", output={"name": "bf16"},
                          train={"epochs": 1, "mixed_precision": "bfloat16"})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.saving.load_model(tmp_path / "runs" / "bf16" / "model.keras")
    assert model.output.dtype == "float32"
