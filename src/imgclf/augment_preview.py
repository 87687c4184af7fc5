"""Pick a few training images and draw them with their augmented versions."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from imgclf.config import RunConfig
from imgclf.errors import DatasetError, ImageError
from imgclf.imageio import load_image


def _manifest_rows(manifest: Path) -> list[tuple[str, str]]:
    """Read the (path, label) rows of a `path,label[,split]` manifest that are not in its val or test split.

    Relative paths resolve against the manifest's folder, as in `imgclf.scan.scan_manifest`,
    and a row without a known split counts as training data there too.
    """
    import csv

    from imgclf.scan import SPLIT_FOLDER_NAMES

    try:
        # utf-8-sig also reads the byte-order mark that Excel writes at the start of "CSV UTF-8" files.
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in ("path", "label") if name not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{manifest}: missing column(s) {', '.join(missing)}; a manifest has columns "
                                   "path,label and optionally split")
            records = list(reader)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{manifest}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{manifest}: invalid CSV ({exc})") from None
    rows = []
    for record in records:
        raw_path = (record.get("path") or "").strip()
        label = (record.get("label") or "").strip()
        split = SPLIT_FOLDER_NAMES.get((record.get("split") or "").strip().lower(), "train")
        if raw_path and label and split == "train":
            rows.append((str(manifest.parent / raw_path), label))
    return rows


def _candidate_rows(data_path: str) -> list[tuple[str, str]]:
    """Training (path, label) rows, one class after another, without scanning a whole dataset."""
    from imgclf.scan import find_split_folders, manifest_path, walk_files
    from imgclf.splitting import is_split_folder, read_split

    manifest = manifest_path(data_path)
    if is_split_folder(data_path):
        rows = read_split(data_path).rows["train"]
    elif manifest is not None:
        rows = _manifest_rows(manifest)
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
