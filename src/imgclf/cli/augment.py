"""`imgclf augment`: preview what the augmentation settings of a config do."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from imgclf.cli.common import cli_errors, err_console, labelled, quiet_tensorflow, setup_logging


def augment_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML run config whose augmentation section to preview."),
    preview: Path = typer.Option(..., "--preview", help="PNG file to write the grid to; its name must end in .png."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Config overrides, e.g. augmentation.rotation_degrees=30."),
    images: int = typer.Option(4, "--images", min=1, max=32, help="How many training images (rows)."),
    variants: int = typer.Option(6, "--variants", min=1, max=16, help="Augmented versions per image (columns after the original)."),
) -> None:
    """Write a grid of augmented versions of a few training images."""
    setup_logging()
    with cli_errors():
        from imgclf.config import load_config

        _check_preview(preview)
        run_config = load_config(config, overrides or [])
        _check_data_path(run_config.data.path)
        if not run_config.augmentation.enabled:
            err_console.print(labelled("warning:", "yellow", "every augmentation setting in the config is off, so each "
                                       "variant equals the original; set e.g. augmentation.rotation_degrees=20"),
                              highlight=False, soft_wrap=True)
        quiet_tensorflow()
        from imgclf.augment_preview import write_preview

        count = write_preview(run_config, preview, images, variants)
        err_console.print(f"wrote {preview.resolve()}: {count} images x {variants} augmented versions",
                          markup=False, highlight=False, soft_wrap=True)


def _check_preview(preview: Path) -> None:
    """Reject a --preview path that is a folder or lacks the .png suffix, before any work is done."""
    from imgclf.errors import ConfigError

    if preview.is_dir():
        raise ConfigError(f"--preview {preview}: a folder, not a file; --preview must name a .png file, "
                          f"e.g. --preview {preview / 'grid.png'}")
    if preview.suffix.lower() != ".png":
        raise ConfigError(f"--preview {preview}: --preview must name a .png file, e.g. --preview grid.png")


def _check_data_path(data_path: str) -> None:
    """Fail on a mistyped data.path before the seconds that importing TensorFlow takes."""
    from imgclf.errors import DatasetError

    if not os.path.exists(data_path):
        raise DatasetError(f"data.path {data_path!r}: not found; give a dataset folder, split folder or manifest")
