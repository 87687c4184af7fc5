"""The `imgclf` Typer application. Subcommand modules import TensorFlow only when they run."""

from __future__ import annotations

import typer

from imgclf import __version__
from imgclf.cli import augment, check, datasets, evaluate, export, import_cmd, predict, runs, serve, split, train, verify
from imgclf.cli.common import DEBUG

app = typer.Typer(
    name="imgclf",
    help="Train, evaluate and use image classifiers from folders of labelled images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgclf {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Train, evaluate and use image classifiers from folders of labelled images."""
    DEBUG["enabled"] = DEBUG["enabled"] or debug


app.command("split")(split.split_command)
app.command("import")(import_cmd.import_command)
app.command("check")(check.check_command)
app.command("augment")(augment.augment_command)
app.command("train", context_settings={"allow_extra_args": False})(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("predict")(predict.predict_command)
app.command("export")(export.export_command)
app.command("verify")(verify.verify_command)
app.command("serve")(serve.serve_command)
app.add_typer(datasets.app, name="datasets")
app.add_typer(runs.app, name="runs")


def run() -> None:
    """Console-script entry point."""
    app()
