"""`verify_bundle`: check a bundle again, in whatever process calls it, usually a fresh `imgclf verify`.

Checks, in order: every model file matches the SHA-256 in `imgclf.json`, and `model.keras` loads
in Keras safe mode. Then every model file, loaded with the runtime `imgclf predict` uses, must pass
the parity check against `model.keras` on the images the export checked (or on `images` given here).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from imgclf.bundle import KERAS_FILE, Bundle, read_bundle, sha256_of
from imgclf.errors import DatasetError, ImageError
from imgclf.export.parity import compare, predict_all
from imgclf.imageio import load_image
from imgclf.progress import Reporter


def verify_bundle(folder: str | os.PathLike, images: Optional[Sequence[str]] = None,
                  reporter: Optional[Reporter] = None) -> dict:
    """Verify a bundle and return a report: the images used and, per model file, its checks.

    Args:
        folder: a bundle folder written by `imgclf export`.
        images: image files to compare on instead of the validation images the manifest lists
            (for a bundle moved away from the run's data).

    Returns:
        {"bundle", "n_images", "images_from", "keras_safe_mode", "artifacts": [{"key", "sha256_ok",
        "parity"}], "passed"}. The caller decides what a failure means; nothing is raised for one.

    Raises:
        ModelError: when `model.keras` does not load in Keras safe mode.
        DatasetError: when no image to compare on can be found.
    """
    from imgclf.prediction import load_runtime
    from imgclf.runs import ResolvedModel, load_keras_model
    from imgclf.runtimes import KerasRuntime

    reporter = reporter or Reporter()
    bundle = read_bundle(folder)
    keras_model = load_keras_model(bundle.folder / KERAS_FILE)
    reporter.message(f"{bundle.folder / KERAS_FILE}: loads in Keras safe mode")
    pixels, source = _images(bundle, images)
    reference = predict_all(KerasRuntime(keras_model, bundle.image_size), pixels)
    results = []
    for entry in bundle.artifacts:
        path = bundle.path_of(entry)
        result = {"key": entry["key"], "path": entry["path"], "sha256_ok": path.exists() and sha256_of(path) == entry["sha256"]}
        if path.exists():
            resolved = ResolvedModel(path, bundle.classes, None, bundle.image_size, entry["format"])
            runtime = load_runtime(resolved)
            result["parity"] = compare(reference, predict_all(runtime, pixels), quantized=entry.get("quantize") is not None)
        results.append(result)
    passed = all(result["sha256_ok"] and result.get("parity", {}).get("passed", False) for result in results)
    return {"bundle": str(bundle.folder), "n_images": len(pixels), "images_from": source, "keras_safe_mode": True,
            "artifacts": results, "passed": passed}


def _images(bundle: Bundle, images: Optional[Sequence[str]]) -> tuple[np.ndarray, str]:
    """Decode the images to compare on: the given files, else the manifest's parity sample."""
    if images is not None:
        decoded = _decode_all(list(images), bundle.image_size)
        if not decoded:
            raise DatasetError(f"none of the {len(images)} files given with --images could be decoded")
        return np.stack(decoded), "--images"
    sample = bundle.manifest.get("parity_sample", {}).get("images", [])
    present = [item["path"] for item in sample if Path(item["path"]).is_file() and sha256_of(item["path"]) == item["sha256"]]
    if not present:
        first = sample[0]["path"] if sample else "(none listed)"
        raise DatasetError(
            f"{bundle.folder}: the validation images the export checked are not on this machine or have changed "
            f"(first: {first}); pass --images with a folder of images like the ones the model classifies"
        )
    return np.stack(_decode_all(present, bundle.image_size)), f"{len(present)} of {len(sample)} parity images in the manifest"


def _decode_all(paths: list[str], image_size: tuple[int, int]) -> list[np.ndarray]:
    decoded = []
    for path in paths:
        try:
            decoded.append(load_image(path, image_size))
        except ImageError:
            continue
    return decoded
