"""`imgclf predict`: classify image files, folders and globs with a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from imgclf.cli.common import cli_errors, console, err_console, quiet_tensorflow, setup_logging
from imgclf.constants import DEFAULT_MAX_PIXELS


def predict_command(
    model: Path = typer.Argument(..., help="Run directory, or a .keras file with classes.json beside it."),
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively) and glob patterns."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="How many of the most probable classes to list."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per model call."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-image-pixels", help="Reject images with more pixels than this."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per input on stdout (JSON Lines)."),
) -> None:
    """Predict the class of each image. Exits with code 5 when any input could not be read."""
    quiet_tensorflow()
    setup_logging()
    with cli_errors():
        from imgclf.errors import ImageError
        from imgclf.prediction import Predictor
        from imgclf.scan import iter_files

        files = iter_files(paths)
        predictor = Predictor.load(model, max_image_pixels)
        results = predictor.predict_files(files, top_k=min(top_k, len(predictor.classes)), batch_size=batch_size)
        failures = _render(results, json_output)
        if failures:
            raise ImageError(f"{failures} of {len(files)} inputs could not be read (see the error lines above)")


def _render(results, json_output: bool) -> int:
    failures = 0
    table = None
    if not json_output:
        from rich.table import Table

        table = Table()
        for column in ("path", "class", "confidence", "top k"):
            table.add_column(column, justify="right" if column == "confidence" else "left",
                             overflow="fold" if column == "path" else "ellipsis")
    for result in results:
        if result.error is not None:
            failures += 1
        if json_output:
            typer.echo(json.dumps(result.to_json(), ensure_ascii=False))
        elif result.error is not None:
            err_console.print(f"[red]error:[/] {result.error}", highlight=False)
        else:
            others = ", ".join(f"{name} {probability:.3f}" for name, probability in result.top_k[1:])
            table.add_row(result.path, result.label, f"{result.confidence:.4f}", others)
    if table is not None and table.row_count:
        console.print(table)
    return failures
