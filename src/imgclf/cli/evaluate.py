"""`imgclf evaluate`: metrics of a run's model on one of its splits."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.text import Text

from imgclf.cli.common import RichReporter, cli_errors, console, quiet_tensorflow, setup_logging


def evaluate_command(
    run: Path = typer.Argument(..., help="Run directory written by `imgclf train`."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: train, val or test."),
    json_output: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object on stdout."),
) -> None:
    """Evaluate a trained model: accuracy, per-class precision/recall/F1 and the confusion matrix."""
    setup_logging()
    with cli_errors():
        _check_arguments(run, split)
        quiet_tensorflow()
        from imgclf.evaluation import evaluate_run

        with RichReporter() as reporter:
            metrics = evaluate_run(run, split, reporter)
        if json_output:
            typer.echo(json.dumps(metrics, ensure_ascii=False))
        else:
            render_metrics(metrics)


def _check_arguments(run: Path, split: str) -> None:
    """Fail on a mistyped run directory or split before the seconds that importing TensorFlow takes."""
    from imgclf.errors import DatasetError, ModelError
    from imgclf.runs import RUN_FILE
    from imgclf.splitting import SPLITS

    if split not in SPLITS:
        raise DatasetError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if not (run / RUN_FILE).is_file():
        raise ModelError(f"{run}: not a finished run directory (no {RUN_FILE}); give a folder written by `imgclf train`")


def render_metrics(metrics: dict) -> None:
    """Print the per-class table, the overall figures and the confusion matrix."""
    from rich.table import Table

    table = Table(title=f"{metrics['split']} split: {metrics['n_images']} images")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right",
                         overflow="fold" if column == "class" else "ellipsis")
    for name, row in metrics["per_class"].items():
        table.add_row(Text(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    table.add_row("[bold]macro average[/]", f"{metrics['macro_precision']:.3f}", f"{metrics['macro_recall']:.3f}",
                  f"{metrics['macro_f1']:.3f}", str(metrics["n_images"]))
    console.print(table)
    summary = f"accuracy {metrics['accuracy']:.4f}"
    if "top3_accuracy" in metrics:
        summary += f", top-3 accuracy {metrics['top3_accuracy']:.4f}"
    console.print(summary)

    classes = metrics["classes"]
    matrix = Table(title="confusion matrix (rows: true class, columns: predicted class)")
    matrix.add_column("", overflow="fold")
    for name in classes:
        matrix.add_column(Text(name), justify="right", overflow="fold")
    for name, row in zip(classes, metrics["confusion_matrix"]):
        matrix.add_row(Text(name), *(str(count) for count in row))
    console.print(matrix)
    if metrics["skipped"]:
        console.print(f"skipped {len(metrics['skipped'])} unreadable images (listed in the metrics JSON)")
