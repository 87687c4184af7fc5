"""Shared fixtures: tiny image datasets made in tmp_path, and the location of ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"

# Colours far apart, so a tiny model separates the classes in one or two epochs.
CLASS_COLOURS = {"cat": (220, 40, 40), "dog": (40, 220, 40), "fish": (40, 40, 220)}


def make_image(path: Path, rgb, size=(16, 16), seed: int = 0, fmt: str | None = None) -> Path:
    """Write a noisy solid-colour RGB image; the noise keeps every file's bytes distinct."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(rgb, np.int16) + rng.integers(-25, 26, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return path


def make_dataset(root: Path, per_class: int = 8, classes=CLASS_COLOURS, size=(16, 16), first_seed: int = 0) -> Path:
    """A folder-per-class dataset: `per_class` PNG and JPEG images in each class folder.

    Images made with the same seed share their noise pattern, and so their perceptual hash;
    give a second call on one root another `first_seed`.
    """
    seed = first_seed
    for name, rgb in classes.items():
        for index in range(per_class):
            extension = "png" if index % 2 else "jpg"
            make_image(root / name / f"{name}_{index}.{extension}", rgb, size, seed)
            seed += 1
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "photos")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep decoded-image caches inside the test's temporary folder."""
    monkeypatch.setenv("IMGCLF_CACHE_DIR", str(tmp_path / "cache"))


def write_config(path: Path, data_path: Path, runs_dir: Path, **sections) -> Path:
    """Write a small, fast run config; `sections` replace or extend the defaults per section."""
    import yaml

    config = {
        "seed": 7,
        "data": {"path": str(data_path), "image_size": 16},
        "model": {"name": "small_cnn", "filters": [8], "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 0.01, "early_stopping_patience": 0},
        "output": {"runs_dir": str(runs_dir), "tensorboard": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    if "backbone" in config["model"]:
        for key in ("name", "filters"):
            config["model"].pop(key, None)
    path.write_text(yaml.safe_dump(config), "utf-8")
    return path


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip where that folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not available on this machine")
    return path


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
