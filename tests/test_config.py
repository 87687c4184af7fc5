from pathlib import Path

import pytest
import yaml

from imgclf.config import apply_overrides, load_config, save_config, validate_config
from imgclf.errors import ConfigError


def _write(tmp_path: Path, payload: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(payload), "utf-8")
    return path


def test_config_defaults_fill_missing_sections(tmp_path):
    config = load_config(_write(tmp_path, {"data": {"path": "photos"}}))
    assert config.model.architecture == "small_cnn"
    assert config.data.image_size == (64, 64)
    assert config.train.epochs == 20


def test_config_int_image_size_means_square(tmp_path):
    config = load_config(_write(tmp_path, {"data": {"path": "p", "image_size": 48}}))
    assert config.data.image_size == (48, 48)


def test_config_misspelled_key_names_file_and_nearest_key(tmp_path):
    path = _write(tmp_path, {"data": {"path": "p"}, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch'; did you mean 'train\.epochs'") as caught:
        load_config(path)
    assert str(path) in str(caught.value)


def test_config_key_in_wrong_section_suggests_right_one(tmp_path):
    path = _write(tmp_path, {"data": {"path": "p"}, "train": {"image_size": 32}})
    with pytest.raises(ConfigError, match=r"'train\.image_size'; did you mean 'data\.image_size'"):
        load_config(path)


def test_config_unknown_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_config(_write(tmp_path, {"data": {"path": "p"}, "trian": {}}))


def test_config_out_of_range_value_names_value_and_limit(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.epochs = 0 is invalid: .*greater than or equal to 1"):
        load_config(_write(tmp_path, {"data": {"path": "p"}, "train": {"epochs": 0}}))


def test_config_wrong_type_names_value(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.batch_size = 'many' is invalid"):
        load_config(_write(tmp_path, {"data": {"path": "p"}, "train": {"batch_size": "many"}}))


def test_config_bad_choice_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.name = 'resnet' is invalid: .*'simple_cnn' or 'small_cnn'"):
        load_config(_write(tmp_path, {"data": {"path": "p"}, "model": {"name": "resnet"}}))


def test_config_ratios_must_sum_to_one(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.split_ratios .* must sum to 1"):
        load_config(_write(tmp_path, {"data": {"path": "p", "split_ratios": [0.5, 0.2, 0.2]}}))


def test_config_missing_data_path_is_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"missing required key 'data\.path'"):
        load_config(_write(tmp_path, {"data": {}}))


def test_config_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_config_invalid_yaml_is_reported(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data: [unclosed", "utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml: invalid YAML"):
        load_config(path)


def test_overrides_replace_values_with_yaml_types(tmp_path):
    path = _write(tmp_path, {"data": {"path": "p"}, "train": {"epochs": 10}})
    config = load_config(path, ["train.epochs=3", "data.path=other/", "augmentation.horizontal_flip=true",
                                "train.learning_rate=5e-4"])
    assert config.train.epochs == 3
    assert config.data.path == "other/"
    assert config.augmentation.horizontal_flip is True
    assert config.train.learning_rate == pytest.approx(5e-4)


def test_override_with_unknown_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"with overrides\): unknown key 'train\.epocs'; did you mean 'train\.epochs'"):
        load_config(_write(tmp_path, {"data": {"path": "p"}}), ["train.epocs=3"])


def test_override_without_equals_sign_is_rejected():
    with pytest.raises(ConfigError, match=r"override 'train\.epochs': expected KEY=VALUE"):
        apply_overrides({}, ["train.epochs"])


def test_saved_config_loads_back_identical(tmp_path):
    config = validate_config({"data": {"path": "p", "image_size": [24, 32]}, "seed": 3}, "inline")
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


@pytest.mark.parametrize("name", ["digits.yaml", "fashion_mnist.yaml", "sign_language_digits.yaml", "sign_digits.yaml", "hymenoptera.yaml"])
def test_shipped_configs_are_valid(name):
    path = Path(__file__).resolve().parents[1] / "configs" / name
    if not path.exists():
        pytest.skip(f"{name} is not in configs/")
    assert load_config(path).data.path


def test_config_backbone_family_typo_lists_families(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.backbone = 'MobileNet' is invalid: Input should be 'MobileNetV2'"):
        load_config(_write(tmp_path, {"data": {"path": "p"}, "model": {"backbone": "MobileNet"}}))


def test_config_backbone_file_key_typo_suggests_key(tmp_path):
    payload = {"data": {"path": "p"}, "model": {"backbone": {"path": "m.keras", "featurelayer": "avg_pool"}}}
    with pytest.raises(ConfigError, match=r"'model\.backbone\.featurelayer'; did you mean 'model\.backbone\.feature_layer'"):
        load_config(_write(tmp_path, payload))


def test_config_rejects_name_and_backbone_together(tmp_path):
    payload = {"data": {"path": "p"}, "model": {"name": "small_cnn", "backbone": "ResNet50"}}
    with pytest.raises(ConfigError, match=r"set model\.name \(small_cnn\) or model\.backbone, not both"):
        load_config(_write(tmp_path, payload))


def test_config_class_weight_accepts_auto_or_mapping(tmp_path):
    auto = load_config(_write(tmp_path, {"data": {"path": "p"}, "train": {"class_weight": "auto"}}))
    explicit = load_config(_write(tmp_path, {"data": {"path": "p"}, "train": {"class_weight": {"cat": 2}}}))
    assert auto.train.class_weight == "auto"
    assert explicit.train.class_weight == {"cat": 2.0}
