"""`imgclf augment`: preview what the augmentation settings of a config do."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgclf.cli.common import cli_errors, err_console, quiet_tensorflow, setup_logging


def augment_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML run config whose augmentation section to preview."),
    preview: Path = typer.Option(..., "--preview", help="PNG file to write the grid to."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Config overrides, e.g. augmentation.rotation_degrees=30."),
    images: int = typer.Option(4, "--images", min=1, max=32, help="How many training images (rows)."),
    variants: int = typer.Option(6, "--variants", min=1, max=16, help="Augmented versions per image (columns after the original)."),
) -> None:
    """Write a grid of augmented versions of a few training images."""
    setup_logging()
    with cli_errors():
        from imgclf.config import load_config

        run_config = load_config(config, overrides or [])
        quiet_tensorflow()
        from imgclf.augment_preview import write_preview

        count = write_preview(run_config, preview, images, variants)
        err_console.print(f"wrote {preview}: {count} images x {variants} augmented versions")
