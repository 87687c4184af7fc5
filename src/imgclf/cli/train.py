"""`imgclf train`: train a model from a YAML config and write a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgclf.cli.common import RichReporter, cli_errors, quiet_tensorflow, setup_logging


def train_command(
    config: Path = typer.Option(..., "--config", "-c", help="YAML run config (see configs/)."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Config overrides, e.g. train.epochs=3 data.path=photos/."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    """Train a model; the only line on stdout is the run directory."""
    setup_logging(verbose)
    with cli_errors():
        from imgclf.config import load_config

        run_config = load_config(config, overrides or [])
        quiet_tensorflow()
        from imgclf.training import train

        with RichReporter() as reporter:
            result = train(run_config, reporter, config_name=config.stem)
        typer.echo(str(result.run_dir))
