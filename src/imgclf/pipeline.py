"""Input pipeline: decode each image once into a cache of resized uint8 arrays, then `tf.data`.

The cache is a `.npy` file per (file list, image size) under the cache folder, memory-mapped,
so a dataset larger than memory still trains and a second run over the same files skips
decoding. `tf.data` then shuffles indices, gathers batches from the cache, applies
augmentation in parallel and prefetches.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from imgclf.errors import ImageError
from imgclf.cache import default_cache_dir
from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.imageio import load_image
from imgclf.scan import FileIssue

ProgressCallback = Callable[[int, int], None]
CACHE_FORMAT = 1


@dataclass
class DecodedImages:
    """Resized images for one split: `images` uint8 (N, H, W, 3), `labels` int32 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[FileIssue] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def _cache_key(rows: Sequence[tuple[str, str]], image_size: tuple[int, int], max_pixels: int) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{image_size}|{max_pixels}".encode())
    for path, _ in rows:
        try:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:32]


def _decode_into(target: np.ndarray, paths: list[str], image_size, max_pixels, progress) -> list[Optional[ImageError]]:
    errors: list[Optional[ImageError]] = [None] * len(paths)

    def work(index: int) -> int:
        try:
            target[index] = load_image(paths[index], image_size, max_pixels)
        except ImageError as error:
            errors[index] = error
        return index

    workers = max(1, min(16, (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(work, range(len(paths))), start=1):
            if progress is not None:
                progress(done, len(paths))
    return errors


def decode_split(
    rows: Sequence[tuple[str, str]],
    classes: Sequence[str],
    image_size: tuple[int, int],
    cache_dir: Optional[str | os.PathLike] = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Optional[ProgressCallback] = None,
) -> DecodedImages:
    """Decode and resize every image of a split once, reusing a cache written by an earlier run.

    Files that fail to decode are left out and listed in `skipped` with their reason.
    """
    index_of = {name: i for i, name in enumerate(classes)}
    paths = [path for path, _ in rows]
    labels = np.array([index_of[label] for _, label in rows], dtype=np.int32)
    height, width = image_size
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = _cache_key(rows, image_size, max_pixels)
    array_path = folder / f"{key}.npy"
    errors_path = folder / f"{key}.errors.json"

    if array_path.is_file() and errors_path.is_file():
        images = np.load(array_path, mmap_mode="r")
        failed = json.loads(errors_path.read_text("utf-8"))
        if progress is not None:
            progress(len(paths), len(paths))
    else:
        partial = folder / f"{key}.{os.getpid()}.partial.npy"
        try:
            images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), height, width, 3))
            errors = _decode_into(images, paths, image_size, max_pixels, progress)
            images.flush()
            del images
            os.replace(partial, array_path)
        finally:
            # An interrupted or failed decode must not leave a half-written file in the cache.
            partial.unlink(missing_ok=True)
        failed = {str(i): [error.reason, str(error)] for i, error in enumerate(errors) if error is not None}
        errors_path.write_text(json.dumps(failed), "utf-8")
        images = np.load(array_path, mmap_mode="r")

    skipped = [FileIssue(paths[int(i)], reason, detail) for i, (reason, detail) in failed.items()]
    if failed:
        keep = np.array([str(i) not in failed for i in range(len(paths))])
        return DecodedImages(np.asarray(images[keep]), labels[keep], [p for p, k in zip(paths, keep) if k], skipped)
    return DecodedImages(images, labels, paths, skipped)


def make_dataset(
    decoded: DecodedImages,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augmenter=None,
    n_classes: Optional[int] = None,
):
    """Build a `tf.data.Dataset` of (float32 images (B, H, W, 3) in [0, 255], labels).

    Labels are int32 class indices (B,), or float32 one-hot rows (B, n_classes) when
    `n_classes` is given (label smoothing needs one-hot targets).
    """
    import tensorflow as tf

    images, labels = decoded.images, decoded.labels
    _, height, width, _ = images.shape

    def gather(indices: np.ndarray):
        order = np.sort(indices)  # sorted reads are faster on a memory map
        batch = np.asarray(images[order], dtype=np.float32)
        inverse = np.argsort(np.argsort(indices))
        return batch[inverse], labels[indices]

    dataset = tf.data.Dataset.range(len(decoded))
    if shuffle:
        dataset = dataset.shuffle(len(decoded), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def load(indices):
        batch, batch_labels = tf.numpy_function(gather, [indices], [tf.float32, tf.int32], stateful=False)
        batch.set_shape((None, height, width, 3))
        batch_labels.set_shape((None,))
        return batch, batch_labels

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if augmenter is not None:
        dataset = dataset.map(
            lambda batch, batch_labels: (augmenter(batch, training=True), batch_labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if n_classes is not None:
        dataset = dataset.map(lambda batch, batch_labels: (batch, tf.one_hot(batch_labels, n_classes)))
    return dataset.prefetch(tf.data.AUTOTUNE)
