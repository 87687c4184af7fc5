import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from imgclf.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, export_digits, export_fashion_mnist, read_idx
from imgclf.errors import DatasetError


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(folder, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for (images_name, labels_name), count in zip(FASHION_MNIST_FILES.values(), (n_train, n_test)):
        _write_idx(folder / images_name, rng.integers(0, 256, (count, 28, 28)))
        _write_idx(folder / labels_name, np.arange(count) % 10)
    return folder


def test_export_digits_scales_to_full_range(tmp_path):
    counts = export_digits(tmp_path / "digits")
    assert sum(counts.values()) == 1797
    pixels = np.concatenate([np.asarray(Image.open(path)).ravel() for path in sorted((tmp_path / "digits" / "0").glob("*.png"))[:20]])
    assert pixels.max() == 255
    assert pixels.min() == 0


def test_read_idx_reads_shape_and_values(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_read_idx_rejects_wrong_length(tmp_path):
    with gzip.open(tmp_path / "bad.gz", "wb") as handle:
        handle.write(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 4)
    with pytest.raises(DatasetError, match=r"bad\.gz: holds 4 values, but its header announces shape \(10,\)"):
        read_idx(tmp_path / "bad.gz")


def test_export_fashion_mnist_from_folder_keeps_official_split(tmp_path):
    source = _fake_fashion(tmp_path / "idx")
    counts = export_fashion_mnist(tmp_path / "out", str(source))
    assert sum(counts["train"].values()) == 20
    assert sum(counts["test"].values()) == 10
    assert sorted(p.name for p in (tmp_path / "out" / "train").iterdir()) == sorted(FASHION_MNIST_CLASSES)
    with Image.open(next((tmp_path / "out" / "test" / "Bag").glob("*.png"))) as image:
        assert image.size == (28, 28)


def test_export_fashion_mnist_names_missing_files(tmp_path):
    (tmp_path / "idx").mkdir()
    with pytest.raises(DatasetError, match=r"missing train-images-idx3-ubyte\.gz"):
        export_fashion_mnist(tmp_path / "out", str(tmp_path / "idx"))


def test_export_fashion_mnist_reads_prefilled_keras_cache(tmp_path):
    import os
    import subprocess
    import sys

    keras_home = tmp_path / "keras_home"
    _fake_fashion(keras_home / "datasets" / "fashion-mnist")
    # Keras reads KERAS_HOME when it is imported, so the export runs in a fresh process.
    code = "from imgclf.cli.main import app; app(['datasets', 'export', 'fashion-mnist', %r])" % str(tmp_path / "out")
    result = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, KERAS_HOME=str(keras_home)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "train: 20 images in 10 classes" in result.stdout
    assert len(list((tmp_path / "out" / "test").rglob("*.png"))) == 10


def test_shared_fashion_mnist_files_read_when_installed():
    from pathlib import Path

    folder = Path("/usr/share/datasets/fashion-mnist")
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist package is not installed")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10
