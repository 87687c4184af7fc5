"""Keras callbacks used by `imgclf.training`."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import keras

from imgclf.errors import TrainingError
from imgclf.progress import Reporter


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever the monitored metric improves and restore those weights at the end."""

    def __init__(self, path: Path, monitor: str, mode: str, save_model=None):
        """`save_model` is the model written and restored; default the model being fitted. A head
        trained on cached features passes the end-to-end model that contains it."""
        super().__init__()
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.save_model = save_model
        self.best_value = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            available = ", ".join(sorted(logs)) or "none"
            raise TrainingError(f"monitored metric {self.monitor!r} was not computed; available metrics: {available}")
        value = float(logs[self.monitor])
        improved = value > self.best_value if self.mode == "max" else value < self.best_value
        if improved or self.best_weights is None:
            model = self.save_model or self.model
            self.best_value, self.best_epoch = value, epoch
            self.best_weights = model.get_weights()
            model.save(self.path)

    def restore_best(self, model) -> None:
        """Put the best epoch's weights into `model`, from memory or, after a resume, from the saved file."""
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        elif self.path.is_file():
            saved = keras.saving.load_model(self.path, compile=False, safe_mode=True)
            model.set_weights(saved.get_weights())


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training at the first NaN or infinite loss and remember where it happened."""

    def __init__(self):
        super().__init__()
        self.failure = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = (
                f"the training loss became {float(loss)} at epoch {self._epoch + 1}, step {batch + 1}; "
                "lower train.learning_rate or check the input images"
            )
            self.model.stop_training = True


class ProgressCallback(keras.callbacks.Callback):
    """Forward epoch and batch progress to a Reporter and time the training part of each epoch."""

    def __init__(self, reporter: Reporter, epochs: int, n_train: int, phase: str = ""):
        super().__init__()
        self.reporter, self.epochs, self.n_train = reporter, epochs, n_train
        self.label = f" ({phase.replace('_', '-')})" if phase and phase != "scratch" else ""
        self.images_per_second: list[float] = []
        self._steps = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._started = time.perf_counter()
        self._train_seconds = None
        self._steps = self.params.get("steps")
        self.reporter.progress_start("epoch", f"epoch {epoch + 1}/{self.epochs}{self.label}", self._steps)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.reporter.progress_update("epoch", batch + 1, self._steps,
                                      loss=float(logs.get("loss", float("nan"))),
                                      accuracy=float(logs.get("accuracy", float("nan"))))

    def on_test_begin(self, logs=None):
        if getattr(self, "_started", None) is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._started

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        train_seconds = self._train_seconds or seconds
        self.images_per_second.append(self.n_train / train_seconds)
        self.reporter.progress_end("epoch")
        figures = ", ".join(f"{key} {float(value):.4f}" for key, value in sorted((logs or {}).items())
                            if key != "learning_rate")
        self.reporter.message(
            f"epoch {epoch + 1}/{self.epochs}{self.label}: {figures} ({seconds:.1f} s, "
            f"{self.images_per_second[-1]:.0f} images/s)"
        )

    def median_images_per_second(self) -> float:
        """Median training throughput over the epochs, in images per second (0 before any epoch)."""
        return statistics.median(self.images_per_second) if self.images_per_second else 0.0


class StopRequest:
    """Turn the first Ctrl-C or SIGTERM into a request to stop after the current epoch.

    A second signal gets the default behaviour, so a user can still kill a stuck run.
    Signal handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        import signal

        self.requested = True
        for previous_number, previous in self._previous.items():
            signal.signal(previous_number, previous)

    def __exit__(self, *exc_info) -> None:
        import signal

        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous = {}


class EpochRecorder(keras.callbacks.Callback):
    """Append each epoch's metrics to the run history, save a resumable checkpoint, and stop
    at the end of an epoch when a stop was requested."""

    def __init__(self, on_epoch: "callable", stop: StopRequest):
        super().__init__()
        self.on_epoch, self.stop = on_epoch, stop

    def on_epoch_end(self, epoch, logs=None):
        self.on_epoch(epoch, logs or {})
        if self.stop.requested:
            self.model.stop_training = True
