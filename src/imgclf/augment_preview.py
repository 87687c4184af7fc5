"""Pick a few training images and draw them with their augmented versions."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from imgclf.config import RunConfig
from imgclf.errors import DatasetError, ImageError
from imgclf.imageio import load_image


def _candidate_rows(data_path: str) -> list[tuple[str, str]]:
    """Training (path, label) rows, one class after another, without scanning a whole dataset."""
    from imgclf.scan import find_split_folders, walk_files
    from imgclf.splitting import is_split_folder, read_split

    if is_split_folder(data_path):
        rows = read_split(data_path).rows["train"]
    else:
        root = Path(data_path)
        if not root.is_dir():
            raise DatasetError(f"{data_path}: dataset folder not found")
        base = find_split_folders(root).get("train", root)
        rows = []
        for child in sorted(base.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                rows.extend((str(path), child.name) for path in walk_files(child, [])[:64])
    by_class: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    interleaved = itertools.chain.from_iterable(itertools.zip_longest(*by_class.values()))
    return [row for row in interleaved if row is not None]


def write_preview(config: RunConfig, out_path: str | os.PathLike, n_images: int, n_variants: int) -> int:
    """Write the augmentation preview grid to `out_path`; returns how many images it shows."""
    import keras

    from imgclf.augmentation import build_augmenter, preview_grid

    keras.utils.set_random_seed(config.seed)
    images, titles = [], []
    for path, label in _candidate_rows(config.data.path):
        try:
            images.append(load_image(path, config.data.image_size, config.data.max_image_pixels))
        except ImageError:
            continue
        titles.append(label)
        if len(images) == n_images:
            break
    if not images:
        raise DatasetError(f"{config.data.path}: no readable training images to preview")
    augmenter = build_augmenter(config.augmentation, config.seed)
    preview_grid(np.stack(images), augmenter, n_variants, str(out_path), titles)
    return len(images)
