"""Training: from a validated config to a run directory holding the best model."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from imgclf.config import RunConfig, save_config
from imgclf.errors import DatasetError, TrainingError
from imgclf.progress import Reporter
from imgclf.runs import CLASSES_FILE, MODEL_FILE, RUN_FILE, new_run_dir, versions, write_json
from imgclf.scan import scan_dataset
from imgclf.splitting import Split, data_warnings, is_split_folder, read_split, split_scan, write_split

log = logging.getLogger("imgclf")


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    train_images_per_second: float


def prepare_split(config: RunConfig, run_dir: Path, reporter: Reporter) -> Split:
    """Read the split that `data.path` names, or scan and split a dataset root into `run_dir/split`."""
    source = config.data.path
    if is_split_folder(source):
        split = read_split(source)
        reporter.message(f"split folder {source}: {_split_sizes(split)}")
        return split
    reporter.message(f"scanning {source}")
    reporter.progress_start("scan", "scanning files", None)
    scan = scan_dataset(source, config.data.max_image_pixels,
                        progress=lambda done, total: reporter.progress_update("scan", done, total),
                        cache_dir=config.data.cache_dir)
    reporter.progress_end("scan")
    split = split_scan(scan, config.data.split_ratios, config.seed, config.data.drop_empty_classes,
                       config.data.near_duplicate_distance, config.data.group_by)
    write_split(split, run_dir / "split")
    report = split.report
    reporter.message(
        f"found {len(scan.records)} images in {len(split.classes)} classes; "
        f"skipped {len(report['skipped'])}, ignored {len(report['ignored'])}; split {_split_sizes(split)}"
    )
    return split


def _split_sizes(split: Split) -> str:
    return ", ".join(f"{name} {len(rows)}" for name, rows in split.rows.items())


def _decode(split: Split, name: str, config: RunConfig, reporter: Reporter):
    from imgclf.pipeline import decode_split

    reporter.progress_start(f"decode-{name}", f"decoding {name}", len(split.rows[name]))
    decoded = decode_split(
        split.rows[name], split.classes, config.data.image_size, config.data.cache_dir,
        config.data.max_image_pixels,
        progress=lambda done, total: reporter.progress_update(f"decode-{name}", done, total),
    )
    reporter.progress_end(f"decode-{name}")
    for issue in decoded.skipped:
        reporter.message(f"skipped {issue.path}: {issue.detail}")
    return decoded


def _optimizer(config: RunConfig, steps_per_epoch: int):
    import keras

    train = config.train
    learning_rate = train.learning_rate
    if train.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(train.learning_rate, train.epochs * steps_per_epoch)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=train.weight_decay)
    return keras.optimizers.SGD(learning_rate, momentum=train.momentum, weight_decay=train.weight_decay or None)


def _metrics(config: RunConfig, n_classes: int) -> list:
    import keras

    metrics: list = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if n_classes > config.train.top_k:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=config.train.top_k, name=f"top{config.train.top_k}_accuracy"))
    return metrics


def _callbacks(config: RunConfig, run_dir: Path, reporter: Reporter, n_train: int):
    import keras

    from imgclf.training_callbacks import BestCheckpoint, NonFiniteLossGuard, ProgressCallback

    monitor = config.train.monitor
    mode = "max" if monitor.endswith("accuracy") else "min"
    checkpoint = BestCheckpoint(run_dir / MODEL_FILE, monitor, mode)
    guard = NonFiniteLossGuard()
    progress = ProgressCallback(reporter, config.train.epochs, n_train)
    callbacks = [guard, checkpoint, progress, keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"))]
    if config.train.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor, patience=config.train.early_stopping_patience, mode=mode))
    if config.output.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"), write_graph=False, profile_batch=0))
    return callbacks, checkpoint, guard, progress


def train(config: RunConfig, reporter: Optional[Reporter] = None, config_name: str = "run") -> TrainResult:
    """Train the model that `config` describes and write a run directory.

    Raises:
        DatasetError: when the data cannot be split or a split is empty.
        TrainingError: when the loss becomes non-finite.
    """
    import keras

    from imgclf.augmentation import build_augmenter
    from imgclf.models import build_model
    from imgclf.pipeline import make_dataset

    reporter = reporter or Reporter()
    keras.utils.set_random_seed(config.seed)
    run_dir = new_run_dir(config.output.runs_dir, config.output.name, config_name)
    save_config(config, run_dir / "config.yaml")
    reporter.message(f"run directory {run_dir}")

    split = prepare_split(config, run_dir, reporter)
    for warning in data_warnings(split):
        log.warning("warning: %s", warning)
    write_json(run_dir / CLASSES_FILE, split.classes)
    train_images = _decode(split, "train", config, reporter)
    val_images = _decode(split, "val", config, reporter)
    if len(train_images) == 0:
        raise DatasetError(f"{config.data.path}: the train split holds no usable images")
    if len(val_images) == 0:
        raise DatasetError(
            f"{config.data.path}: the val split holds no usable images, but train.monitor={config.train.monitor} "
            "needs them; give data.split_ratios a val share or add a val/ folder"
        )

    batch_size = config.train.batch_size
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    augmenter = build_augmenter(config.augmentation, config.seed)
    train_data = make_dataset(train_images, batch_size, shuffle=True, seed=config.seed, augmenter=augmenter)
    val_data = make_dataset(val_images, batch_size, shuffle=False, seed=config.seed)

    model = build_model(config.model, config.data.image_size, len(split.classes))
    model.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=_metrics(config, len(split.classes)),
    )
    reporter.message(
        f"model {config.model.name}: {model.count_params():,} parameters, input {config.data.image_size[0]}x"
        f"{config.data.image_size[1]}, {len(split.classes)} classes; training {len(train_images)} images, "
        f"validating on {len(val_images)}"
    )
    callbacks, checkpoint, guard, progress = _callbacks(config, run_dir, reporter, len(train_images))

    started = time.perf_counter()
    # shuffle=False: the tf.data pipeline already reshuffles every epoch.
    history = model.fit(train_data, validation_data=val_data, epochs=config.train.epochs, callbacks=callbacks, verbose=0,
                        shuffle=False)
    seconds = time.perf_counter() - started
    if guard.failure is not None:
        raise TrainingError(guard.failure)
    checkpoint.restore_best(model)

    history_rows = _history_rows(history.history)
    write_json(run_dir / "history.json", history_rows)
    result = TrainResult(
        run_dir=run_dir,
        best_epoch=checkpoint.best_epoch + 1,
        best_metrics=history_rows[checkpoint.best_epoch] if history_rows else {},
        epochs_run=len(history_rows),
        train_images_per_second=progress.median_images_per_second(),
    )
    _write_run_record(config, split, run_dir, result, seconds, train_images.skipped + val_images.skipped)
    best = result.best_metrics
    if "accuracy" in best and "val_accuracy" in best:
        reporter.message(
            f"train/validation gap at the best epoch: accuracy {best['accuracy']:.4f} vs val_accuracy "
            f"{best['val_accuracy']:.4f} ({best['accuracy'] - best['val_accuracy']:+.4f})"
        )
    reporter.message(
        f"best epoch {result.best_epoch}/{result.epochs_run}: "
        + ", ".join(f"{key} {value:.4f}" for key, value in result.best_metrics.items() if key != "epoch")
        + f"; model written to {run_dir / MODEL_FILE}"
    )
    return result


def _history_rows(history: dict) -> list[dict]:
    keys = sorted(history)
    n_epochs = len(history[keys[0]]) if keys else 0
    return [
        {"epoch": epoch + 1, **{key: float(history[key][epoch]) for key in keys if key != "learning_rate"}}
        for epoch in range(n_epochs)
    ]


def _write_run_record(config, split, run_dir, result: TrainResult, seconds: float, skipped) -> None:
    write_json(run_dir / RUN_FILE, {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seed": config.seed,
        "versions": versions(),
        "data": {
            "source": os.path.abspath(config.data.path),
            "split_folder": os.path.abspath(split.folder) if split.folder else None,
            "manifest_sha256": split.manifest_hash(),
            "classes": split.classes,
            "counts": split.counts(),
        },
        "model": {"name": config.model.name, "image_size": list(config.data.image_size), "file": MODEL_FILE,
                  "input": "RGB pixels in [0, 255], any size; resizing and rescaling are inside the model"},
        "training": {
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_metrics": result.best_metrics,
            "seconds": round(seconds, 2),
            "train_images_per_second": round(result.train_images_per_second, 1),
        },
        "skipped_while_decoding": [issue.__dict__ for issue in skipped],
    })
