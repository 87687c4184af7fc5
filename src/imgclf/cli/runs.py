"""`imgclf runs`: list, show and compare run directories, and open them in TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from imgclf.cli.common import cli_errors, console

app = typer.Typer(help="Past training runs: list, show, compare, TensorBoard.", no_args_is_help=True)

COLUMNS = [("name", "run"), ("model", "model"), ("epochs_run", "epochs"), ("val_accuracy", "best val acc"),
           ("test_accuracy", "test acc"), ("test_macro_f1", "test macro F1"), ("seconds", "seconds"),
           ("created", "created")]


def _cell(value) -> Text:
    """Format a run figure as a table cell that is never read as Rich markup, since run names come from users."""
    if value is None:
        return Text("-")
    if isinstance(value, float):
        return Text(f"{value:.4f}" if value < 10 else f"{value:.1f}")
    return Text(str(value))


@app.command("list")
def list_command(
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run directories."),
    sort: Optional[str] = typer.Option(None, "--sort", help="Sort by a figure, best first, e.g. test_accuracy or val_loss."),
    json_output: bool = typer.Option(False, "--json", help="Print the runs as one JSON list on stdout."),
) -> None:
    """List the runs under a folder with their headline metrics."""
    with cli_errors():
        from imgclf.experiments import list_runs

        runs = list_runs(runs_dir, sort)
        if json_output:
            typer.echo(json.dumps(runs, ensure_ascii=False))
            return
        from rich.table import Table

        table = Table(title=Text(f"{len(runs)} runs in {runs_dir}"))
        for _, title in COLUMNS:
            table.add_column(title, justify="left" if title in ("run", "model", "created") else "right",
                             overflow="fold" if title in ("run", "model") else "ellipsis")
        for run in runs:
            table.add_row(*(_cell(run.get(key)) for key, _ in COLUMNS))
        console.print(table)


@app.command("show")
def show_command(
    run: Path = typer.Argument(..., help="Run directory."),
    json_output: bool = typer.Option(False, "--json", help="Print everything recorded as one JSON object."),
) -> None:
    """Show one run: data, model, training phases and evaluation metrics."""
    with cli_errors():
        from imgclf.experiments import show_run

        details = show_run(run)
        if json_output:
            typer.echo(json.dumps(details, ensure_ascii=False))
            return
        from rich.table import Table

        table = Table(title=Text(str(run)), show_header=False)
        table.add_column("figure", overflow="fold")
        table.add_column("value", overflow="fold")
        for key, value in details["summary"].items():
            table.add_row(Text(key), _cell(value))
        for phase in (details["record"] or {}).get("training", {}).get("phases", []):
            table.add_row(Text(f"phase {phase['name']}"), Text(f"{phase['epochs_run']} epochs, {phase['seconds']} s, "
                                                               f"learning rate {phase['learning_rate']}"))
        console.print(table)


@app.command("compare")
def compare_command(
    runs: List[Path] = typer.Argument(..., help="Two or more run directories."),
    json_output: bool = typer.Option(False, "--json", help="Print the comparison as one JSON object."),
) -> None:
    """Compare runs: metrics side by side and the config keys that differ."""
    with cli_errors():
        from imgclf.experiments import compare_runs

        comparison = compare_runs(runs)
        if json_output:
            typer.echo(json.dumps(comparison, ensure_ascii=False))
            return
        from rich.table import Table

        summaries = comparison["runs"]
        table = Table(title="metrics")
        table.add_column("figure")
        for summary in summaries:
            table.add_column(Text(summary["name"]), justify="right", overflow="fold")
        for key, title in COLUMNS[1:]:
            table.add_row(title, *(_cell(summary.get(key)) for summary in summaries))
        console.print(table)
        differences = Table(title=f"{len(comparison['config_differences'])} config keys differ")
        differences.add_column("key", overflow="fold")
        for summary in summaries:
            differences.add_column(Text(summary["name"]), overflow="fold")
        for key, values in comparison["config_differences"].items():
            differences.add_row(Text(key), *(Text(json.dumps(value)) for value in values))
        console.print(differences)


@app.command("tensorboard")
def tensorboard_command(
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Folder holding the run directories."),
    port: int = typer.Option(6006, "--port", help="Port for TensorBoard on 127.0.0.1."),
    launch: bool = typer.Option(False, "--launch", help="Start TensorBoard now instead of printing the command."),
) -> None:
    """Say how to open the runs' TensorBoard logs (or start TensorBoard with --launch)."""
    import sys

    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(runs_dir), "--host", "127.0.0.1",
               "--port", str(port)]
    if not launch:
        typer.echo(f"tensorboard --logdir {runs_dir} --host 127.0.0.1 --port {port}")
        typer.echo(f"then open http://127.0.0.1:{port}/ (each run's logs are in <run>/tensorboard)")
        return
    import subprocess

    raise typer.Exit(subprocess.call(command))
