"""A finished run directory made in seconds, for export and prediction tests.

`make_run` writes what `imgclf train` writes (model.keras, classes.json, config.yaml, run.json,
history.json, and evaluation/ from `imgclf.evaluation.evaluate_run`) and a split folder, for a 16x16 small CNN fitted on
three colour classes. It calls Keras directly rather than `imgclf train`, so these tests take
seconds and do not depend on the training module.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml

from conftest import CLASS_COLOURS, make_dataset

IMAGE_SIZE = (16, 16)
CLASSES = sorted(CLASS_COLOURS)
# Images per class in each split: 12 per class in all.
PER_SPLIT = {"train": 6, "val": 3, "test": 3}


def _write_split(photos: Path, folder: Path) -> dict[str, list[tuple[str, str]]]:
    folder.mkdir(parents=True)
    rows: dict[str, list[tuple[str, str]]] = {name: [] for name in PER_SPLIT}
    for label in CLASSES:
        files = sorted((photos / label).iterdir())
        start = 0
        for split, count in PER_SPLIT.items():
            rows[split] += [(str(path), label) for path in files[start:start + count]]
            start += count
    for split, split_rows in rows.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows(split_rows)
    (folder / "classes.json").write_text(json.dumps(CLASSES), "utf-8")
    return rows


def _fit_model(rows: list[tuple[str, str]], seed: int):
    import keras

    from imgclf.imageio import load_image
    from imgclf.models import build_small_cnn

    keras.utils.set_random_seed(seed)
    images = np.stack([load_image(path, IMAGE_SIZE) for path, _ in rows]).astype(np.float32)
    labels = np.array([CLASSES.index(label) for _, label in rows])
    model = build_small_cnn(IMAGE_SIZE, len(CLASSES), filters=(8,), dropout=0.0)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=30, batch_size=len(images), verbose=0)
    return model


def make_run(root: Path, seed: int = 7) -> Path:
    """Write a dataset, its split and a finished run directory under `root`; return the run directory."""
    from imgclf.evaluation import evaluate_run
    from imgclf.runs import versions
    from imgclf.splitting import read_split

    photos = make_dataset(root / "photos", per_class=sum(PER_SPLIT.values()))
    split_folder = root / "split"
    rows = _write_split(photos, split_folder)
    run = root / "runs" / "tiny"
    run.mkdir(parents=True)
    model = _fit_model(rows["train"], seed)
    model.save(run / "model.keras")
    (run / "classes.json").write_text(json.dumps(CLASSES), "utf-8")
    config = {"seed": seed, "data": {"path": str(split_folder), "image_size": list(IMAGE_SIZE)},
              "model": {"name": "small_cnn", "filters": [8], "dropout": 0.0}}
    (run / "config.yaml").write_text(yaml.safe_dump(config), "utf-8")
    split = read_split(split_folder)
    record = {"seed": seed, "versions": versions(),
              "data": {"source": str(photos), "split_folder": str(split_folder),
                       "manifest_sha256": split.manifest_hash(), "classes": CLASSES, "counts": split.counts()},
              "training": {"epochs_run": 30, "best_epoch": 30, "best_metrics": {}}}
    (run / "run.json").write_text(json.dumps(record), "utf-8")
    (run / "history.json").write_text("[]", "utf-8")
    evaluate_run(run, "test")
    return run
