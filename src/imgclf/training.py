"""Training: from a validated config to a run directory holding the best model.

A run has one phase for a model trained from scratch, and two for a pretrained backbone:
`frozen` trains the head with the backbone frozen (on features computed once when no
augmentation is on), then `fine_tune` unfreezes the top of the backbone at a lower learning
rate. BatchNormalization layers stay in inference mode throughout.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from imgclf.config import RunConfig, save_config
from imgclf.errors import ConfigError, DatasetError, TrainingError, TrainingInterrupted
from imgclf.progress import Reporter
from imgclf.runs import CLASSES_FILE, MODEL_FILE, RUN_FILE, new_run_dir, read_json, versions, write_json
from imgclf.scan import scan_dataset
from imgclf.splitting import Split, data_warnings, is_split_folder, read_split, split_scan, write_split

log = logging.getLogger("imgclf")
CHECKPOINT_DIR = "checkpoint"


@dataclass
class Phase:
    """One `fit` call: its name, epoch budget, peak learning rate and whether it trains on cached features."""

    name: str
    epochs: int
    learning_rate: float
    feature_cache: bool = False


@dataclass
class TrainResult:
    """Summary of a finished run."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    train_images_per_second: float
    phases: list[dict] = field(default_factory=list)


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


def plan_phases(config: RunConfig) -> list[Phase]:
    """The phases `config` asks for: `scratch`, or `frozen` then (optionally) `fine_tune`."""
    train = config.train
    if not config.model.pretrained:
        return [Phase("scratch", train.epochs, train.learning_rate)]
    cache = train.feature_cache and not config.augmentation.enabled
    phases = [Phase("frozen", train.epochs, train.learning_rate, feature_cache=cache)]
    if train.fine_tune_epochs > 0:
        phases.append(Phase("fine_tune", train.fine_tune_epochs, train.fine_tune_learning_rate or train.learning_rate / 10))
    return phases


def _configure_runtime(config: RunConfig):
    """Seed every generator, set determinism and precision, and return the distribution strategy."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if config.train.mixed_precision == "bfloat16" else "float32")
    if config.train.distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if config.train.distribute == "multi_worker_mirrored":
        # NOTE: every worker writes the same run directory; only a single-machine run is tested.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _learning_rate(config: RunConfig, phase: Phase, steps_per_epoch: int):
    import keras

    train = config.train
    total_steps = max(1, phase.epochs * steps_per_epoch)
    warmup_steps = min(total_steps - 1, int(round(train.warmup_epochs * steps_per_epoch)))
    if train.lr_schedule == "cosine":
        if warmup_steps > 0:
            return keras.optimizers.schedules.CosineDecay(
                0.0, total_steps - warmup_steps, warmup_target=phase.learning_rate, warmup_steps=warmup_steps)
        return keras.optimizers.schedules.CosineDecay(phase.learning_rate, total_steps)
    if warmup_steps > 0:
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            [warmup_steps], [phase.learning_rate / 10, phase.learning_rate])
    return phase.learning_rate


def _optimizer(config: RunConfig, phase: Phase, steps_per_epoch: int):
    import keras

    train = config.train
    learning_rate = _learning_rate(config, phase, steps_per_epoch)
    if train.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if train.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=train.weight_decay)
    return keras.optimizers.SGD(learning_rate, momentum=train.momentum, weight_decay=train.weight_decay or None)


def _compile(model, config: RunConfig, phase: Phase, steps_per_epoch: int, n_classes: int) -> None:
    import keras

    metrics: list = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if n_classes > config.train.top_k:
        k = config.train.top_k
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=k, name=f"top{k}_accuracy"))
    model.compile(
        optimizer=_optimizer(config, phase, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing),
        metrics=metrics,
    )


def class_weights(config: RunConfig, classes: list[str], labels) -> Optional[dict[int, float]]:
    """Per-class loss weights by class index, or None: `auto` is n_images / (n_classes * n_class_images)."""
    import numpy as np

    setting = config.train.class_weight
    if setting == "none":
        return None
    if setting == "auto":
        counts = np.bincount(np.asarray(labels), minlength=len(classes))
        return {index: float(len(labels) / (len(classes) * count)) for index, count in enumerate(counts) if count}
    unknown = sorted(set(setting) - set(classes))
    if unknown:
        raise ConfigError(
            f"train.class_weight names unknown class(es) {', '.join(map(repr, unknown))}; the classes are "
            f"{', '.join(classes)}"
        )
    return {index: float(setting.get(name, 1.0)) for index, name in enumerate(classes)}


def _check_imbalance(config: RunConfig, split: Split) -> None:
    totals = {name: counts["train"] for name, counts in split.counts().items()}
    smallest = min(totals, key=totals.get)
    largest = max(totals, key=totals.get)
    if totals[smallest] and totals[largest] / totals[smallest] > config.train.imbalance_warning_ratio \
            and config.train.class_weight == "none":
        log.warning(
            "warning: %r has %d training images and %r %d, more than train.imbalance_warning_ratio=%g to 1; "
            "consider train.class_weight: auto", largest, totals[largest], smallest, totals[smallest],
            config.train.imbalance_warning_ratio)


class _Trainer:
    """The state shared by the phases of one run."""

    def __init__(self, config: RunConfig, run_dir: Path, split: Split, train_images, val_images, reporter, strategy):
        self.config, self.run_dir, self.split = config, run_dir, split
        self.train_images, self.val_images = train_images, val_images
        self.reporter, self.strategy = reporter, strategy
        self.n_classes = len(split.classes)
        self.history: list[dict] = []
        self.phase_records: list[dict] = []
        self.images_per_second: list[float] = []
        self.stop = None
        self.resume_state: Optional[dict] = None
        self.tracker = None

    def build(self) -> None:
        from imgclf.models import build_model_parts
        from imgclf.training_callbacks import BestCheckpoint

        with self.strategy.scope():
            self.parts = build_model_parts(self.config.model, self.config.data.image_size, self.n_classes)
        monitor = self.config.train.monitor
        self.mode = "max" if monitor.endswith("accuracy") else "min"
        self.checkpoint = BestCheckpoint(self.run_dir / MODEL_FILE, monitor, self.mode, save_model=self.parts.model)
        self.weights = class_weights(self.config, self.split.classes, self.train_images.labels)

    def _callbacks(self, phase: Phase):
        import keras

        from imgclf.training_callbacks import NonFiniteLossGuard, ProgressCallback

        from imgclf.training_callbacks import EpochRecorder

        train = self.config.train
        guard = NonFiniteLossGuard()
        progress = ProgressCallback(self.reporter, self.total_epochs, len(self.train_images), phase.name)
        recorder = EpochRecorder(lambda epoch, logs: self._record_epoch(phase, epoch, logs, progress), self.stop)
        callbacks = [guard, self.checkpoint, progress, recorder]
        if train.early_stopping_patience > 0:
            callbacks.append(keras.callbacks.EarlyStopping(train.monitor, patience=train.early_stopping_patience, mode=self.mode))
        if self.config.output.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(str(self.run_dir / "tensorboard"), write_graph=False, profile_batch=0))
        return callbacks, guard, progress

    def _datasets(self, phase: Phase):
        from imgclf.augmentation import build_augmenter
        from imgclf.pipeline import make_dataset

        batch_size, seed = self.config.train.batch_size, self.config.seed
        if phase.feature_cache:
            return self._feature_datasets(batch_size, seed)
        augmenter = build_augmenter(self.config.augmentation, seed)
        train_data = make_dataset(self.train_images, batch_size, True, seed, augmenter, self.n_classes)
        val_data = make_dataset(self.val_images, batch_size, False, seed, None, self.n_classes)
        return train_data, val_data

    def _feature_datasets(self, batch_size: int, seed: int):
        import tensorflow as tf

        if not hasattr(self, "_features"):
            started = time.perf_counter()
            self._features = [self._extract(self.train_images), self._extract(self.val_images)]
            self.feature_seconds = round(time.perf_counter() - started, 2)
            self.reporter.message(
                f"computed backbone features of {len(self.train_images) + len(self.val_images)} images once "
                f"({time.perf_counter() - started:.1f} s); the frozen phase trains the head on them")
        datasets = []
        for (features, labels), shuffle in zip(self._features, (True, False)):
            dataset = tf.data.Dataset.from_tensor_slices((features, tf.one_hot(labels, self.n_classes)))
            if shuffle:
                dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
            datasets.append(dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE))
        return datasets

    def _extract(self, decoded):
        import numpy as np
        import tensorflow as tf

        extract = tf.function(lambda batch: self.parts.features(batch, training=False))
        chunks = [extract(tf.constant(np.asarray(decoded.images[start:start + 128], np.float32))).numpy()
                  for start in range(0, len(decoded), 128)]
        return np.concatenate(chunks).astype(np.float32), decoded.labels

    def _target(self, phase: Phase):
        """The model a phase fits: the head alone on cached features, else the end-to-end model."""
        from imgclf.models import set_backbone_trainable

        if phase.name == "frozen":
            self.parts.backbone.trainable = False
            return self.parts.head if phase.feature_cache else self.parts.model
        if phase.name == "fine_tune":
            unfrozen = set_backbone_trainable(self.parts.backbone, self.config.model.fine_tune_layers)
            self.reporter.message(f"fine-tuning: {unfrozen} backbone layers with weights unfrozen, "
                                  "BatchNormalization kept in inference mode")
        return self.parts.model

    def run_phase(self, index: int, phase: Phase, initial_epoch: int) -> int:
        """Run one phase from `initial_epoch`; returns the number of the last epoch completed.

        Raises:
            TrainingError: on a non-finite loss or when memory runs out.
            TrainingInterrupted: when Ctrl-C or SIGTERM stopped the phase after an epoch.
        """
        self._phase_index, self._phase_started_epoch = index, initial_epoch
        target = self._target(phase)
        self._fitted = target
        train_data, val_data = self._datasets(phase)
        steps_per_epoch = math.ceil(len(self.train_images) / self.config.train.batch_size)
        with self.strategy.scope():
            _compile(target, self.config, phase, steps_per_epoch, self.n_classes)
            if self.resume_state and self.resume_state.get("phase_in_progress") == index:
                target.optimizer.build(target.trainable_variables)
                target.load_weights(self.run_dir / CHECKPOINT_DIR / "fitted.weights.h5")
        end_epoch = self._phase_end_epoch(index, phase, initial_epoch)
        callbacks, guard, progress = self._callbacks(phase)
        started = time.perf_counter()
        self._fit(target, train_data, val_data, end_epoch, initial_epoch, callbacks)
        if guard.failure is not None:
            raise TrainingError(guard.failure)
        completed = self.history[-1]["epoch"] if self.history else initial_epoch
        if self.stop.requested:
            raise TrainingInterrupted(
                f"stopped after epoch {completed}; a resumable checkpoint is in {self.run_dir / CHECKPOINT_DIR}. "
                f"Continue with: imgclf train --resume {self.run_dir}"
            )
        self.phase_records.append({
            "name": phase.name, "epochs_run": sum(1 for row in self.history if row["phase"] == phase.name),
            "learning_rate": phase.learning_rate, "feature_cache": phase.feature_cache,
            "feature_extraction_seconds": getattr(self, "feature_seconds", None) if phase.feature_cache else None,
            "seconds": round(time.perf_counter() - started, 2),
            "train_images_per_second": round(progress.median_images_per_second(), 1),
        })
        self._save_state(phase_in_progress=None, next_phase=index + 1)
        return completed

    def _phase_end_epoch(self, index: int, phase: Phase, initial_epoch: int) -> int:
        """The epoch a phase runs to; a resumed phase keeps the end it had when it started."""
        if self.resume_state and self.resume_state.get("phase_in_progress") == index:
            return self.resume_state["phase_end_epoch"]
        self._current_end = initial_epoch + phase.epochs
        return self._current_end

    def _record_epoch(self, phase: Phase, epoch: int, logs: dict, progress) -> None:
        row = {"epoch": epoch + 1, "phase": phase.name}
        row.update({key: float(value) for key, value in sorted(logs.items())})
        # The rate the next step would use, read from the optimizer, so a resumed run shows its schedule.
        row["learning_rate"] = float(self._fitted.optimizer.learning_rate.numpy())
        self.history.append(row)
        self.images_per_second.append(progress.images_per_second[-1])
        _write_metrics_csv(self.run_dir / "metrics.csv", self.history)
        if self.tracker is not None:
            self.tracker.log_metrics(row, step=row["epoch"])
        end = getattr(self, "_current_end", None) or self.resume_state["phase_end_epoch"]
        self._save_state(phase_in_progress=self._phase_index, next_phase=self._phase_index, phase_end_epoch=end)

    def _save_state(self, phase_in_progress: Optional[int], next_phase: int, phase_end_epoch: int = 0) -> None:
        """Write the resumable checkpoint: weights (with optimizer state) and where training stands."""
        folder = self.run_dir / CHECKPOINT_DIR
        folder.mkdir(exist_ok=True)
        self.parts.model.save_weights(folder / "model.weights.h5")
        if phase_in_progress is not None:
            self._fitted.save_weights(folder / "fitted.weights.h5")
        write_json(folder / "state.json", {
            "next_phase": next_phase,
            "phase_in_progress": phase_in_progress,
            "phase_end_epoch": phase_end_epoch,
            "completed_epoch": self.history[-1]["epoch"] if self.history else 0,
            "manifest_sha256": self.split.manifest_hash(),
            "best": {"value": self.checkpoint.best_value, "epoch": self.checkpoint.best_epoch},
            "history": self.history,
            "phase_records": self.phase_records,
            "images_per_second": self.images_per_second,
        })

    def restore(self, state: dict) -> None:
        """Take up a run where `state` (from checkpoint/state.json) left it."""
        self.resume_state = state
        self.history = state["history"]
        self.phase_records = state["phase_records"]
        self.images_per_second = state["images_per_second"]
        self.checkpoint.best_value = state["best"]["value"]
        self.checkpoint.best_epoch = state["best"]["epoch"]
        self.parts.model.load_weights(self.run_dir / CHECKPOINT_DIR / "model.weights.h5")

    def _fit(self, target, train_data, val_data, epochs, initial_epoch, callbacks):
        import tensorflow as tf

        try:
            # shuffle=False: the tf.data pipeline already reshuffles every epoch.
            return target.fit(train_data, validation_data=val_data, epochs=epochs, initial_epoch=initial_epoch,
                              callbacks=callbacks, verbose=0, shuffle=False, class_weight=self.weights)
        except tf.errors.ResourceExhaustedError:
            size = self.config.data.image_size
            raise TrainingError(
                f"out of memory with train.batch_size={self.config.train.batch_size} and data.image_size "
                f"{size[0]}x{size[1]}; lower train.batch_size first, then data.image_size"
            ) from None

    @property
    def total_epochs(self) -> int:
        return sum(phase.epochs for phase in plan_phases(self.config))


def train(config: RunConfig, reporter: Optional[Reporter] = None, config_name: str = "run") -> TrainResult:
    """Train the model that `config` describes and write a run directory.

    Raises:
        DatasetError: when the data cannot be split or a split is empty.
        TrainingError: when the loss becomes non-finite or memory runs out.
        TrainingInterrupted: after Ctrl-C or SIGTERM; the run directory then holds a checkpoint
            that `resume` continues from.
    """
    reporter = reporter or Reporter()
    if not os.path.exists(config.data.path):
        # Checked before the run directory exists, so a typo leaves no empty run behind.
        raise DatasetError(f"data.path {config.data.path!r}: not found; give a dataset folder, split folder or manifest")
    run_dir = new_run_dir(config.output.runs_dir, config.output.name, config_name)
    save_config(config, run_dir / "config.yaml")
    reporter.message(f"run directory {run_dir}")
    return _run(config, run_dir, reporter, state=None)


def resume(run_dir: str | os.PathLike, reporter: Optional[Reporter] = None, config: Optional[RunConfig] = None) -> TrainResult:
    """Continue an interrupted run after its last completed epoch.

    The model weights, the optimizer state (and so the learning-rate schedule position), the
    best checkpoint and the history are restored. `config`, when given, must equal the run's
    own config.

    Raises:
        TrainingError: when the run has no checkpoint, finished already, or its config or data
            manifest changed since it started.
    """
    from imgclf.config import load_config

    reporter = reporter or Reporter()
    run = Path(run_dir)
    state_file = run / CHECKPOINT_DIR / "state.json"
    if not (run / "config.yaml").is_file():
        raise TrainingError(f"{run_dir}: not a run directory (no config.yaml); give a folder written by `imgclf train`")
    if not state_file.is_file():
        raise TrainingError(f"{run_dir}: no resumable checkpoint (the run stopped before finishing its first epoch)")
    saved = load_config(run / "config.yaml")
    if config is not None:
        _check_same_config(saved, config, run)
    state = read_json(state_file)
    if state["next_phase"] >= len(plan_phases(saved)):
        raise TrainingError(f"{run_dir}: this run finished all its epochs; there is nothing to resume")
    reporter.message(f"resuming {run} after epoch {state['completed_epoch']}")
    return _run(saved, run, reporter, state=state)


def _check_same_config(saved: RunConfig, given: RunConfig, run: Path) -> None:
    from imgclf.experiments import config_differences

    differences = config_differences(saved.to_dict(), given.to_dict())
    differences = [item for item in differences if not item[0].startswith("output.")]
    if differences:
        listed = "; ".join(f"{key}: {old!r} in the run, {new!r} now" for key, old, new in differences)
        raise TrainingError(f"{run}: the config changed since the run started ({listed}); start a new run instead")


def _run(config: RunConfig, run_dir: Path, reporter: Reporter, state: Optional[dict]) -> TrainResult:
    import keras

    from imgclf.training_callbacks import StopRequest

    strategy = _configure_runtime(config)
    try:
        if state is None:
            split = prepare_split(config, run_dir, reporter)
        else:
            split = read_split(run_dir / "split" if (run_dir / "split").is_dir() else config.data.path)
            if split.manifest_hash() != state["manifest_sha256"]:
                raise TrainingError(
                    f"{run_dir}: the data manifest changed since the run started (SHA-256 {state['manifest_sha256'][:12]} "
                    f"then, {split.manifest_hash()[:12]} now); start a new run instead"
                )
        for warning in data_warnings(split):
            log.warning("warning: %s", warning)
        _check_imbalance(config, split)
        write_json(run_dir / CLASSES_FILE, split.classes)
        if config.output.tensorboard and state is None:
            from imgclf.tensorboard_logs import write_config_text

            write_config_text(run_dir, (run_dir / "config.yaml").read_text("utf-8"))
        train_images = _decode(split, "train", config, reporter)
        val_images = _decode(split, "val", config, reporter)
        _check_not_empty(config, train_images, val_images)

        trainer = _Trainer(config, run_dir, split, train_images, val_images, reporter, strategy)
        trainer.tracker = _start_tracking(config, run_dir, split, resumed=state is not None)
        trainer.build()
        parts = trainer.parts
        reporter.message(
            f"model {parts.model.name}: {parts.model.count_params():,} parameters, input "
            f"{config.data.image_size[0]}x{config.data.image_size[1]}, {len(split.classes)} classes; "
            f"training {len(train_images)} images, validating on {len(val_images)}"
        )
        first_phase, epoch = 0, 0
        if state is not None:
            trainer.restore(state)
            first_phase, epoch = state["next_phase"], state["completed_epoch"]
        started = time.perf_counter()
        with StopRequest() as stop:
            trainer.stop = stop
            for index, phase in enumerate(plan_phases(config)):
                if index >= first_phase:
                    epoch = trainer.run_phase(index, phase, epoch)
        seconds = time.perf_counter() - started
        trainer.checkpoint.restore_best(parts.model)
    finally:
        keras.mixed_precision.set_global_policy("float32")

    return _finish(config, split, run_dir, trainer, seconds, train_images.skipped + val_images.skipped, reporter)


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    """Rewrite metrics.csv from the history: one row per epoch, numbered from 1 as in history.json."""
    import csv

    columns = ["epoch", "phase"] + sorted({key for row in history for key in row} - {"epoch", "phase"})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _start_tracking(config: RunConfig, run_dir: Path, split: Split, resumed: bool):
    """Open the MLflow run for this run directory when `tracking.mlflow` is set, else return None."""
    settings = config.tracking.mlflow
    if settings is None:
        return None
    from imgclf.tracking import MlflowRun

    if resumed:
        return MlflowRun.reopen(settings, run_dir)
    tracker = MlflowRun(settings, run_dir)
    tracker.log_config(config, split.manifest_hash())
    return tracker


def _check_not_empty(config: RunConfig, train_images, val_images) -> None:
    if len(train_images) == 0:
        raise DatasetError(f"{config.data.path}: the train split contains no usable images")
    if len(val_images) == 0:
        raise DatasetError(
            f"{config.data.path}: the val split contains no usable images, but train.monitor={config.train.monitor} "
            "needs them; give data.split_ratios a val share or add a val/ folder"
        )


def _finish(config, split, run_dir, trainer: _Trainer, seconds, skipped, reporter) -> TrainResult:
    import statistics

    # The run is complete: its weights live in model.keras, and state.json records that
    # every phase finished, so the checkpoint's weight files can go.
    for name in ("model.weights.h5", "fitted.weights.h5"):
        (run_dir / CHECKPOINT_DIR / name).unlink(missing_ok=True)

    write_json(run_dir / "history.json", trainer.history)
    best_index = trainer.checkpoint.best_epoch
    best_row = next((row for row in trainer.history if row["epoch"] == best_index + 1), {})
    result = TrainResult(
        run_dir=run_dir,
        best_epoch=best_index + 1,
        best_metrics=best_row,
        epochs_run=len(trainer.history),
        train_images_per_second=statistics.median(trainer.images_per_second) if trainer.images_per_second else 0.0,
        phases=trainer.phase_records,
    )
    _write_run_record(config, split, run_dir, result, seconds, skipped, trainer.parts.preprocessing)
    _calibrate(trainer, run_dir, reporter)
    if trainer.tracker is not None:
        names = ("config.yaml", "run.json", "history.json", "calibration.json", "classes.json", MODEL_FILE)
        trainer.tracker.log_files([run_dir / name for name in names])
        trainer.tracker.finish()
        reporter.message(f"logged to MLflow run {trainer.tracker.run_id} at {config.tracking.mlflow.tracking_uri}")
    best = {key: value for key, value in best_row.items() if isinstance(value, float)}
    if "accuracy" in best and "val_accuracy" in best:
        reporter.message(
            f"train/validation gap at the best epoch: accuracy {best['accuracy']:.4f} vs val_accuracy "
            f"{best['val_accuracy']:.4f} ({best['accuracy'] - best['val_accuracy']:+.4f})"
        )
    reporter.message(
        f"best epoch {result.best_epoch}/{result.epochs_run}: "
        + ", ".join(f"{key} {value:.4f}" for key, value in best.items())
        + f"; model written to {run_dir / MODEL_FILE}"
    )
    return result


def _calibrate(trainer: _Trainer, run_dir: Path, reporter: Reporter) -> None:
    """Fit temperature scaling on the validation split and write calibration.json."""
    import numpy as np
    import tensorflow as tf

    from imgclf.calibration import fit_temperature

    model = trainer.parts.model
    predict = tf.function(lambda batch: model(batch, training=False))
    images = trainer.val_images.images
    probabilities = np.concatenate([
        predict(tf.constant(np.asarray(images[start:start + 128], np.float32))).numpy()
        for start in range(0, len(images), 128)
    ])
    calibration = fit_temperature(probabilities.astype(np.float64), trainer.val_images.labels)
    write_json(run_dir / "calibration.json", calibration)
    reporter.message(
        f"calibration: temperature {calibration['temperature']:.3f} fitted on {calibration['n_images']} val images; "
        f"expected calibration error {calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after"
    )


def _write_run_record(config, split, run_dir, result: TrainResult, seconds: float, skipped, preprocessing: str) -> None:
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
        "model": {
            "architecture": config.model.architecture,
            "backbone": config.model.backbone if isinstance(config.model.backbone, (str, type(None)))
            else config.model.backbone.model_dump(),
            "image_size": list(config.data.image_size),
            "file": MODEL_FILE,
            "input": "RGB pixels in [0, 255], any size; resizing and preprocessing are inside the model",
            "preprocessing": preprocessing,
        },
        "training": {
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "best_metrics": result.best_metrics,
            "seconds": round(seconds, 2),
            "train_images_per_second": round(result.train_images_per_second, 1),
            "phases": result.phases,
        },
        "skipped_while_decoding": [issue.__dict__ for issue in skipped],
    })
