"""`imgclf export`: write a run's model as a bundle of Keras, SavedModel and TensorFlow Lite files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from imgclf.cli.common import RichReporter, cli_errors, console, quiet_tensorflow, setup_logging


def export_command(
    run: Path = typer.Argument(..., help="Run directory written by `imgclf train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create, or a bundle of the same model to add files to."),
    formats: List[str] = typer.Option(
        ["keras"], "--format", "-f",
        help="keras, savedmodel or tflite; repeat the option or separate with commas for several. "
             "model.keras is always written, as the parity reference."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="TensorFlow Lite quantization: dynamic, float16 or int8 (default: float32)."),
    name: Optional[str] = typer.Option(
        None, "--name", help="TensorFlow Serving model name, the folder under savedmodel/ (default: the run folder's name)."),
    version: int = typer.Option(1, "--version", help="TensorFlow Serving version folder, an integer >= 1."),
    max_accuracy_drop: float = typer.Option(
        1.0, "--max-accuracy-drop",
        help="Percentage points of validation top-1 accuracy a quantized model may lose before it is rejected."),
    parity_images: int = typer.Option(200, "--parity-images", help="Validation images in the parity check."),
    calibration_images: int = typer.Option(200, "--calibration-images", help="Training images int8 calibrates on."),
    json_output: bool = typer.Option(False, "--json", help="Print the bundle manifest as JSON on stdout."),
) -> None:
    """Export a trained model. Every file is checked against the Keras model before the bundle is written."""
    setup_logging()
    with cli_errors():
        from imgclf.export.metadata import read_run

        # Reading the run first makes a mistyped RUN fail before TensorFlow's start-up seconds.
        read_run(run)
        quiet_tensorflow()
        from imgclf.export import ExportOptions, export_bundle

        options = ExportOptions(
            formats=[part.strip() for value in formats for part in value.split(",") if part.strip()],
            quantize=quantize, name=name, version=version, max_accuracy_drop=max_accuracy_drop,
            parity_images=parity_images, calibration_images=calibration_images,
        )
        with RichReporter() as reporter:
            manifest = export_bundle(run, out, options, reporter)
        if json_output:
            typer.echo(json.dumps(manifest, ensure_ascii=False))
        else:
            render_artifacts(manifest["artifacts"], Text(f"bundle {out}"))


def render_artifacts(artifacts: list[dict], title: Text) -> None:
    """Print one row per model file: its path, size and parity figures."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("file", "size", "max abs diff", "top-1 agreement", "accuracy change"):
        table.add_column(column, justify="left" if column == "file" else "right",
                         overflow="fold" if column == "file" else "ellipsis")
    for entry in artifacts:
        parity = entry["parity"]
        change = entry.get("accuracy")
        table.add_row(Text(entry["path"]), f"{entry['bytes'] / 1024:,.0f} KiB", f"{parity['max_abs_diff']:.1e}",
                      f"{parity['top1_agreement']:.2%}", f"{change['change_points']:+.2f} points" if change else "")
    console.print(table)
