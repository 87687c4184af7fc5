"""Parity checks: the same images through the Keras model and an exported model, compared.

A float32 export (`keras`, `savedmodel`, `tflite`) passes when no probability differs from the
Keras model's by more than `FLOAT_TOLERANCE`. A quantized `.tflite` (`dynamic`, `float16`,
`int8`) passes when it picks the Keras model's top-1 class on at least `MIN_TOP1_AGREEMENT` of
the images. Its probabilities move by more than that tolerance by design, because its weights
(and for int8 its activations) are rounded: float16 moved them by up to 1.3e-3 on the
sign-language-digits model in benchmarks/predict_speed.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from imgclf.bundle import sha256_of
from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.errors import DatasetError
from imgclf.pipeline import decode_split
from imgclf.runtimes import Runtime

FLOAT_TOLERANCE = 1e-4
MIN_TOP1_AGREEMENT = 0.99


@dataclass
class ImageSample:
    """Decoded images for a check: uint8 pixels (N, height, width, 3), their labels and files."""

    split: str
    images: np.ndarray
    labels: np.ndarray
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        """List the files with their SHA-256, so `imgclf verify` can decode exactly these again."""
        return {"split": self.split, "n_images": len(self.paths),
                "images": [{"path": path, "sha256": sha256_of(path)} for path in self.paths]}


def sample_rows(rows: Sequence[tuple[str, str]], n_max: int, seed: int) -> list[tuple[str, str]]:
    """Up to `n_max` rows drawn without replacement with `seed`, kept in their original order."""
    if len(rows) <= n_max:
        return list(rows)
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=n_max, replace=False))
    return [rows[i] for i in chosen]


def decode_sample(split_name: str, rows: Sequence[tuple[str, str]], classes: Sequence[str],
                  image_size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSample:
    """Decode `rows` through imgclf's decoder and cache; files that fail to decode are left out.

    Raises:
        DatasetError: when no file decodes.
    """
    decoded = decode_split(rows, classes, image_size, max_pixels=max_pixels)
    if len(decoded) == 0:
        raise DatasetError(f"none of the {len(rows)} {split_name} images could be decoded, so nothing can be checked")
    return ImageSample(split_name, np.asarray(decoded.images), np.asarray(decoded.labels), list(decoded.paths))


def predict_all(runtime: Runtime, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run `images` (N, height, width, 3) through a runtime in batches; float32 (N, n_classes)."""
    batches = [runtime.predict(np.asarray(images[start:start + batch_size], dtype=np.float32))
               for start in range(0, len(images), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, runtime.n_classes), np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray, quantized: bool) -> dict:
    """Compare an exported model's probabilities with the Keras model's on the same images.

    Returns the image count, the largest and mean absolute probability difference, the share
    of images where both pick the same class, the criterion applied and whether it passed.
    """
    difference = np.abs(np.asarray(reference, np.float64) - np.asarray(candidate, np.float64))
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    max_diff = float(difference.max())
    if quantized:
        criterion, passed = f"top-1 agreement >= {MIN_TOP1_AGREEMENT}", agreement >= MIN_TOP1_AGREEMENT
    else:
        criterion, passed = f"max abs probability difference <= {FLOAT_TOLERANCE}", max_diff <= FLOAT_TOLERANCE
    return {
        "n_images": int(len(reference)),
        "max_abs_diff": max_diff,
        "mean_abs_diff": float(difference.mean()),
        "top1_agreement": agreement,
        "criterion": criterion,
        "passed": bool(passed),
    }


def describe_failure(name: str, result: dict) -> str:
    """Write one sentence with the numbers of a failed parity check."""
    return (
        f"{name} failed the parity check on {result['n_images']} images: max abs probability difference "
        f"{result['max_abs_diff']:.2e}, top-1 agreement {result['top1_agreement']:.2%} "
        f"(required: {result['criterion']})"
    )


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of probabilities (N, n_classes) against int labels (N,)."""
    return float(np.mean(probabilities.argmax(axis=1) == labels)) if len(labels) else 0.0


def accuracy_change(reference: np.ndarray, candidate: np.ndarray, sample: ImageSample,
                    max_drop_points: Optional[float]) -> dict:
    """Top-1 accuracy of both models on `sample`, the change in percentage points and whether it is allowed."""
    before, after = accuracy(reference, sample.labels), accuracy(candidate, sample.labels)
    change = round((after - before) * 100.0, 4)
    return {
        "split": sample.split,
        "n_images": len(sample),
        "keras": before,
        "exported": after,
        "change_points": change,
        "max_drop_points": max_drop_points,
        "passed": max_drop_points is None or -change <= max_drop_points,
    }
