"""`imgclf datasets export`: write public datasets as PNG class folders."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from imgclf.cli.common import cli_errors, console, quiet_tensorflow

app = typer.Typer(help="Public datasets as folders of class folders.", no_args_is_help=True)


class DatasetName(str, Enum):
    digits = "digits"
    fashion_mnist = "fashion-mnist"


@app.command("export")
def export_command(
    name: DatasetName = typer.Argument(..., help="digits: scikit-learn's 1,797 8x8 scans; fashion-mnist: 70,000 28x28 images."),
    out: Path = typer.Argument(..., help="Folder to write the class folders into."),
    source: Optional[Path] = typer.Option(None, "--from", help="fashion-mnist: folder with the four IDX .gz files instead of Keras' download cache."),
) -> None:
    """Export a public dataset as PNG files, one folder per class."""
    with cli_errors():
        from imgclf.datasets import export_digits, export_fashion_mnist
        from imgclf.errors import ConfigError

        if name is DatasetName.digits and source is not None:
            raise ConfigError(f"--from {source}: only fashion-mnist reads files from a folder; digits come with "
                              "scikit-learn, so drop --from")
        if name is DatasetName.digits:
            counts = {"all": export_digits(out)}
        else:
            quiet_tensorflow()
            counts = export_fashion_mnist(out, str(source) if source else None)
        for split, per_class in counts.items():
            total = sum(per_class.values())
            console.print(f"{split}: {total} images in {len(per_class)} classes written to {out}", markup=False)
