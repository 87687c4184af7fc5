import numpy as np
import pytest

from conftest import make_dataset, make_image
from imgclf.config import ModelConfig
from imgclf.imageio import load_image
from imgclf.pipeline import decode_split, make_dataset as make_tf_dataset


def _rows(root):
    return sorted((str(path), path.parent.name) for path in root.rglob("*.*"))


def test_decode_split_matches_load_image(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3, size=(20, 12))
    rows = _rows(root)
    decoded = decode_split(rows, ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    assert decoded.images.shape == (9, 16, 16, 3)
    assert decoded.images.dtype == np.uint8
    for index, (path, _) in enumerate(rows):
        np.testing.assert_array_equal(decoded.images[index], load_image(path, (16, 16)))


def test_decode_split_reuses_cache_on_second_call(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=2)
    rows = _rows(root)
    decode_split(rows, ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    calls = []
    decode_split(rows, ["cat", "dog", "fish"], (16, 16), tmp_path / "cache", progress=lambda d, t: calls.append(d))
    assert calls == [len(rows)]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_decode_split_cache_invalidated_by_file_change(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=2)
    rows = _rows(root)
    first = decode_split(rows, ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    make_image(root / "cat" / "cat_0.jpg", (0, 0, 0), size=(16, 16), seed=99, fmt="JPEG")
    second = decode_split(rows, ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    assert not np.array_equal(first.images, second.images)


def test_decode_split_lists_file_that_broke_after_scan(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=2)
    (root / "dog" / "dog_1.png").write_bytes(b"")
    decoded = decode_split(_rows(root), ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    assert len(decoded) == 5
    assert [issue.reason for issue in decoded.skipped] == ["empty"]


def test_tf_dataset_yields_cached_pixels_in_order(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3)
    decoded = decode_split(_rows(root), ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    batches = list(make_tf_dataset(decoded, batch_size=4, shuffle=False, seed=0))
    images = np.concatenate([batch.numpy() for batch, _ in batches])
    labels = np.concatenate([label.numpy() for _, label in batches])
    np.testing.assert_array_equal(images, decoded.images.astype(np.float32))
    np.testing.assert_array_equal(labels, decoded.labels)


def test_tf_dataset_shuffle_keeps_image_label_pairs(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=4)
    decoded = decode_split(_rows(root), ["cat", "dog", "fish"], (16, 16), tmp_path / "cache")
    for batch, labels in make_tf_dataset(decoded, batch_size=5, shuffle=True, seed=3):
        for image, label in zip(batch.numpy(), labels.numpy()):
            matches = np.flatnonzero((decoded.images.astype(np.float32) == image).all(axis=(1, 2, 3)))
            assert decoded.labels[matches[0]] == label


@pytest.mark.parametrize("name", ["simple_cnn", "small_cnn"])
def test_model_resizes_raw_pixels_itself(name):
    from imgclf.models import build_model

    model = build_model(ModelConfig(name=name, filters=(4,)), (16, 16), 3)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.float32)
    large = rng.integers(0, 256, (2, 40, 30, 3)).astype(np.float32)
    assert model(small).shape == (2, 3)
    assert model(large).shape == (2, 3)
    np.testing.assert_allclose(model(small).numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_model_resize_layer_keeps_images_already_at_size():
    import keras

    from imgclf.models import build_simple_cnn

    model = build_simple_cnn((16, 16), 2)
    rescale = keras.Model(model.input, model.get_layer("rescale").output)
    pixels = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(rescale(pixels).numpy(), pixels / 255.0, atol=1e-6)


def test_simple_cnn_has_classic_layers():
    from imgclf.models import build_simple_cnn

    model = build_simple_cnn((32, 32), 4)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Resizing", "Rescaling", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                     "Flatten", "Dense", "Dense"]
