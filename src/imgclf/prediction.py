"""Prediction: a loaded model with its class names, applied to files, bytes or arrays in batches.

Every input goes through `imgclf.imageio` (decoding, EXIF orientation, transparency on white,
then Pillow's bilinear resize to the model's input size), so the command line, the Python API
(`imgclf.load(path).predict(...)`) and a server give the same probabilities for the same file.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image

from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.errors import ImageError, ModelError
from imgclf.imageio import load_image, resize_rgb, to_rgb
from imgclf.runs import ResolvedModel, load_keras_model, resolve_model
from imgclf.runtimes import KerasRuntime, LiteRTRuntime, Runtime, SavedModelRuntime

# One input to `Predictor.predict`: a file path, encoded image bytes, or a pixel array.
PredictInput = Union[str, os.PathLike, bytes, np.ndarray]

# Batches decoded ahead of the one being predicted: enough to keep the model busy while the
# decoding threads work, and the bound on how many decoded images are held at once.
_BATCHES_AHEAD = 2


@dataclass
class Prediction:
    """One input's result: the best class, its probability and the top k, or the error that stopped it.

    `probabilities` lists every class's probability in class order; `to_json` leaves it out.
    """

    path: str
    label: Optional[str] = None
    confidence: Optional[float] = None
    top_k: Optional[list[tuple[str, float]]] = None
    error: Optional[str] = None
    reason: Optional[str] = None
    probabilities: Optional[list[float]] = None
    # Set when the confidence fell below the unknown threshold: the class it would have been.
    best_guess: Optional[str] = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error, "reason": self.reason}
        result = {
            "path": self.path,
            "class": self.label,
            "confidence": self.confidence,
            "top_k": [{"class": name, "probability": probability} for name, probability in self.top_k],
        }
        if self.best_guess is not None:
            result["best_guess"] = self.best_guess
        return result


class Predictor:
    """A model, its class names and input size; `predict`, `predict_arrays` and `predict_files` run it in batches.

    Args:
        model: a Keras model, or a `Runtime` (`imgclf.runtimes`).
        classes: class names in output order.
        image_size: (height, width) the inputs are resized to.
        max_pixels: images with more pixels are rejected before decoding.
        source: what was loaded, for messages (a path).
    """

    def __init__(self, model, classes: Sequence[str], image_size: tuple[int, int],
                 max_pixels: int = DEFAULT_MAX_PIXELS, source: Optional[str] = None,
                 temperature: float = 1.0, unknown_threshold: Optional[float] = None):
        self.runtime: Runtime = model if isinstance(model, Runtime) else KerasRuntime(model, image_size)
        # Results (not `predict_arrays`) report probabilities scaled by the temperature fitted on the
        # validation split; below `unknown_threshold` the class is "unknown" and the best guess is kept.
        self.temperature = float(temperature)
        self.unknown_threshold = unknown_threshold
        self.classes = list(classes)
        self.image_size = tuple(image_size)
        self.max_pixels = max_pixels
        self.source = source
        if self.runtime.n_classes != len(self.classes):
            raise ModelError(
                f"{source or 'the model'} has {self.runtime.n_classes} outputs but {len(self.classes)} "
                "class names are stored beside it"
            )
        if self.runtime.input_size is not None and self.runtime.input_size != self.image_size:
            raise ModelError(
                f"{source or 'the model'} takes {self.runtime.input_size[0]}x{self.runtime.input_size[1]} "
                f"images but its manifest says {self.image_size[0]}x{self.image_size[1]}; export the run again"
            )

    @property
    def model(self):
        """The Keras model, for a Predictor built on one (None for the other runtimes)."""
        return getattr(self.runtime, "model", None)

    @classmethod
    def load(cls, model_path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS,
             num_threads: Optional[int] = None) -> "Predictor":
        """Load a run directory, a bundle folder, or a `.keras`, `.tflite` or SavedModel inside either.

        `num_threads` sets LiteRT's thread count for `.tflite` models (default: one per CPU).
        See `imgclf.runs.resolve_model` for which file a folder runs.
        """
        return cls.from_resolved(resolve_model(model_path), max_pixels, num_threads)

    @classmethod
    def from_resolved(cls, resolved: ResolvedModel, max_pixels: int = DEFAULT_MAX_PIXELS,
                      num_threads: Optional[int] = None) -> "Predictor":
        """Load the model that `imgclf.runs.resolve_model` found."""
        runtime = load_runtime(resolved, num_threads)
        image_size = resolved.image_size
        if image_size is None:
            image_size = runtime.input_size or model_image_size(runtime.model)
        return cls(runtime, resolved.classes, image_size, max_pixels, source=str(resolved.model_file),
                   temperature=calibration_temperature(resolved))

    def predict_arrays(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch.

        Args:
            images: uint8 or float array (N, height, width, 3) at the model's input size, values in [0, 255].

        Returns:
            float32 array (N, n_classes), rows summing to 1.
        """
        images = np.asarray(images)
        height, width = self.image_size
        if images.ndim != 4 or images.shape[1:] != (height, width, 3):
            raise ImageError(
                f"expected a batch of shape (N, {height}, {width}, 3), got {images.shape}; "
                "resize with imgclf.imageio.load_image or pass the images to Predictor.predict",
                reason="wrong_shape",
            )
        return self.runtime.predict(images.astype(np.float32, copy=False))

    def predict(self, inputs: Union[PredictInput, Sequence[PredictInput]], top_k: Optional[int] = None) -> list[Prediction]:
        """Predict file paths, encoded image bytes or pixel arrays.

        Args:
            inputs: one input or a sequence of them. Paths and bytes are decoded by
                `imgclf.imageio`. A uint8 array of shape (H, W), (H, W, 3) or (H, W, 4) of any
                size goes through the same colour rules (RGBA on white) and resize. A float
                array must be (height, width, 3) at the model's input size, values in [0, 255].
                A 4-D array is a batch of such arrays.
            top_k: how many classes each result lists (default: all).

        Returns:
            One `Prediction` per input, in input order; an input that cannot be decoded gets
            `error` and `reason` set instead of raising.
        """
        items = _as_input_list(inputs)
        k = len(self.classes) if top_k is None else max(1, min(top_k, len(self.classes)))
        results: list[Prediction] = []
        with ThreadPoolExecutor(max_workers=_decode_workers()) as pool:
            for start in range(0, len(items), 64):
                chunk = items[start:start + 64]
                names = [_describe_input(item, start + offset) for offset, item in enumerate(chunk)]
                results.extend(self._predict_chunk(names, list(pool.map(self._prepare, chunk)), k))
        return results

    def predict_files(self, paths: Iterable[str], top_k: int = 3, batch_size: int = 64,
                      progress: Optional[Callable[[int], None]] = None) -> Iterator[Prediction]:
        """Predict files in input order, yielding each batch's results as soon as it is done.

        Decoding runs on a thread pool while the model runs the batch before, and at most
        `_BATCHES_AHEAD + 1` batches of decoded images are held at once, so memory stays bounded
        however many files there are. A file that cannot be decoded yields a Prediction with
        `error` and `reason` set. `progress(n)` is called after each batch with the number of
        files done so far.
        """
        batches = _chunks(iter(paths), batch_size)
        done = 0
        with ThreadPoolExecutor(max_workers=_decode_workers()) as pool:
            pending = deque(self._submit_batch(pool, chunk) for chunk in itertools.islice(batches, _BATCHES_AHEAD))
            while pending:
                chunk, futures = pending.popleft()
                following = next(batches, None)
                if following is not None:
                    pending.append(self._submit_batch(pool, following))
                decoded = [future.result() for future in futures]
                yield from self._predict_chunk(chunk, decoded, top_k)
                done += len(chunk)
                if progress is not None:
                    progress(done)

    def _submit_batch(self, pool: ThreadPoolExecutor, chunk: list[str]) -> tuple[list[str], list[Future]]:
        return chunk, [pool.submit(self._decode_file, path) for path in chunk]

    def _decode_file(self, path: str):
        try:
            return load_image(path, self.image_size, self.max_pixels)
        except ImageError as error:
            return error

    def _prepare(self, item: PredictInput):
        """Turn one input into uint8 or float pixels at the model's size, or the ImageError that stops it."""
        if not isinstance(item, np.ndarray):
            return self._decode_file(item)
        try:
            return _array_to_pixels(item, self.image_size)
        except ImageError as error:
            return error

    def _predict_chunk(self, names: list[str], decoded: list, top_k: int) -> Iterator[Prediction]:
        good = [i for i, item in enumerate(decoded) if not isinstance(item, ImageError)]
        rows = {}
        if good:
            batch = np.stack([np.asarray(decoded[i], dtype=np.float32) for i in good])
            rows = dict(zip(good, self.predict_arrays(batch)))
        for i, name in enumerate(names):
            if i in rows:
                yield self._result(name, rows[i], top_k)
            else:
                yield Prediction(path=name, error=str(decoded[i]), reason=decoded[i].reason)

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Apply the predictor's temperature to raw probabilities (N, C) or (C,)."""
        from imgclf.calibration import apply_temperature

        batch = np.atleast_2d(probabilities)
        scaled = apply_temperature(batch.astype(np.float64), self.temperature).astype(np.float32)
        return scaled if np.ndim(probabilities) == 2 else scaled[0]

    def _result(self, path: str, probabilities: np.ndarray, top_k: int) -> Prediction:
        probabilities = self.calibrate(probabilities)
        order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
        top = [(self.classes[i], float(probabilities[i])) for i in order]
        label, confidence = top[0]
        best_guess = None
        if self.unknown_threshold is not None and confidence < self.unknown_threshold:
            label, best_guess = UNKNOWN_CLASS, top[0][0]
        return Prediction(path=path, label=label, confidence=confidence, top_k=top,
                          probabilities=[float(value) for value in probabilities], best_guess=best_guess)


UNKNOWN_CLASS = "unknown"


def calibration_temperature(resolved: ResolvedModel) -> float:
    """The temperature fitted after training (run directory's calibration.json, or the bundle
    manifest's training.calibration), or 1.0 when there is none."""
    import json

    if resolved.run_dir is not None and (resolved.run_dir / "calibration.json").is_file():
        return float(json.loads((resolved.run_dir / "calibration.json").read_text("utf-8"))["temperature"])
    from imgclf.bundle import find_bundle

    found = find_bundle(resolved.model_file)
    if found is not None:
        calibration = (found[0].manifest.get("training") or {}).get("calibration") or {}
        return float(calibration.get("temperature", 1.0))
    return 1.0


def load_runtime(resolved: ResolvedModel, num_threads: Optional[int] = None) -> Runtime:
    """Load the runtime for a resolved model: LiteRT for `.tflite`, TensorFlow for the others."""
    if resolved.runtime == "tflite":
        return LiteRTRuntime(resolved.model_file, num_threads)
    if resolved.runtime == "savedmodel":
        return SavedModelRuntime(resolved.model_file)
    model = load_keras_model(resolved.model_file)
    return KerasRuntime(model, resolved.image_size or model_image_size(model))


def model_image_size(model) -> tuple[int, int]:
    """Return the (height, width) of the model's resizing layer, else of its fixed input shape."""
    try:
        layer = model.get_layer("resize")
    except ValueError:
        shape = model.input_shape
        if shape[1] is None or shape[2] is None:
            raise ModelError(f"{model.name}: cannot tell the input size (no 'resize' layer and no fixed input shape)")
        return int(shape[1]), int(shape[2])
    return int(layer.height), int(layer.width)


def _decode_workers() -> int:
    # Pillow releases the GIL while it decodes and resizes, so threads decode in parallel; more
    # threads than CPUs would only take time from the model.
    return max(1, min(16, os.cpu_count() or 1))


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while True:
        chunk = list(itertools.islice(items, size))
        if not chunk:
            return
        yield chunk


def _as_input_list(inputs) -> list:
    if isinstance(inputs, (str, os.PathLike, bytes)):
        return [inputs]
    if isinstance(inputs, np.ndarray):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    return list(inputs)


def _describe_input(item: PredictInput, index: int) -> str:
    if isinstance(item, np.ndarray):
        return f"<array {index}>"
    if isinstance(item, bytes):
        return f"<bytes {index}>"
    return os.fspath(item)


def _array_to_pixels(array: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 array like a decoded file; check that any other array is already model-sized."""
    height, width = image_size
    if array.dtype == np.uint8 and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        return np.asarray(resize_rgb(to_rgb(Image.fromarray(array)), image_size), dtype=np.uint8)
    if array.shape == (height, width, 3) and np.issubdtype(array.dtype, np.number):
        return array
    raise ImageError(
        f"array of shape {array.shape} and dtype {array.dtype}: expected uint8 (H, W), (H, W, 3) or "
        f"(H, W, 4) of any size, or ({height}, {width}, 3) values in [0, 255] of another number type",
        reason="wrong_shape",
    )
