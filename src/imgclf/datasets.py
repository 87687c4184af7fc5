"""Public datasets written out as PNG class folders, so every command can read them like user data."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from imgclf.errors import DatasetError

FASHION_MNIST_CLASSES = [
    "T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The origin Keras' fashion_mnist.load_data downloads from.
FASHION_MNIST_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def _write_pngs(images: np.ndarray, labels: np.ndarray, class_names: list[str], out: Path, prefix: str) -> dict:
    counts = {name: 0 for name in class_names}
    for name in class_names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for index, (pixels, label) in enumerate(zip(images, labels)):
        name = class_names[int(label)]
        Image.fromarray(pixels, mode="L").save(out / name / f"{prefix}{index:05d}.png", optimize=False)
        counts[name] += 1
    return counts


def export_digits(out: str | os.PathLike) -> dict:
    """Write scikit-learn's bundled handwritten digits (1,797 8x8 scans) as `OUT/<digit>/digit_NNNNN.png`.

    Pixel values 0-16 are scaled to 0-255. Returns the number of images per class.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _write_pngs(pixels, digits.target, [str(d) for d in range(10)], Path(out), "digit_")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format) into a uint8 array."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot be read as a gzip-compressed IDX file ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    n_dims = data[3]
    header_end = 4 + 4 * n_dims
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(n_dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=header_end)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: holds {body.size} values, but its header announces shape {shape}")
    return body.reshape(shape)


def _fashion_mnist_folder(source: Optional[str]) -> Path:
    if source:
        folder = Path(source)
        missing = [name for pair in FASHION_MNIST_FILES.values() for name in pair if not (folder / name).is_file()]
        if missing:
            raise DatasetError(
                f"{source}: missing {', '.join(missing)}; give the folder holding the four Fashion-MNIST .gz files "
                "(Debian's dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist)"
            )
        return folder
    import keras

    # Keras' own download and cache path: ~/.keras/datasets/fashion-mnist, or $KERAS_HOME/datasets/...
    folder = None
    for pair in FASHION_MNIST_FILES.values():
        for name in pair:
            try:
                path = keras.utils.get_file(name, origin=FASHION_MNIST_ORIGIN + name, cache_subdir="datasets/fashion-mnist")
            except Exception as exc:  # get_file raises plain Exception on network failures
                raise DatasetError(
                    f"Fashion-MNIST file {name} is not cached and the download failed ({exc}); pass --from DIR "
                    "with the four .gz files"
                ) from None
            folder = Path(path).parent
    return folder


def export_fashion_mnist(out: str | os.PathLike, source: Optional[str] = None) -> dict:
    """Write Fashion-MNIST as `OUT/train/<class>/*.png` and `OUT/test/<class>/*.png` (70,000 28x28 images).

    The official train/test split is kept, so `imgclf split` takes the folder as already
    split and carves val out of train. Returns {split: {class: count}}.
    """
    folder = _fashion_mnist_folder(source)
    # Read and check all four files before writing anything, so a corrupt test file does not
    # leave 60,000 training PNGs behind.
    arrays = {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = read_idx(folder / images_name)
        labels = read_idx(folder / labels_name)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{folder}: {images_name} and {labels_name} do not match ({images.shape} vs {labels.shape})")
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"{folder / labels_name}: label {labels.max()} is out of range 0-9")
        arrays[split] = (images, labels)
    return {split: _write_pngs(images, labels, FASHION_MNIST_CLASSES, Path(out) / split, f"{split}_")
            for split, (images, labels) in arrays.items()}
