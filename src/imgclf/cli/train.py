"""`imgclf train`: train a model from a YAML config and write a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgclf.cli.common import RichReporter, cli_errors, quiet_tensorflow, setup_logging


def train_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (see configs/)."),
    overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", help="Config overrides, e.g. train.epochs=3 data.path=photos/."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this interrupted run directory after its last completed epoch."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    """Train a model; the only line on stdout is the run directory. Ctrl-C stops after the current epoch."""
    setup_logging(verbose)
    with cli_errors():
        from imgclf.config import load_config
        from imgclf.errors import ConfigError

        if config is None and resume is None:
            raise ConfigError("give --config FILE to start a run, or --resume RUN to continue one")
        if config is None and overrides:
            raise ConfigError("KEY=VALUE overrides need --config; a resumed run keeps the config it started with")
        run_config = load_config(config, overrides or []) if config is not None else None
        _check_paths(run_config, resume)
        quiet_tensorflow()
        from imgclf.training import resume as resume_run
        from imgclf.training import train

        with RichReporter() as reporter:
            if resume is not None:
                result = resume_run(resume, reporter, run_config)
            else:
                result = train(run_config, reporter, config_name=config.stem)
        typer.echo(str(result.run_dir))


def _check_paths(run_config, resume: Optional[Path]) -> None:
    """Fail on a mistyped data.path or --resume folder before the seconds that importing TensorFlow takes."""
    import os

    from imgclf.errors import DatasetError, TrainingError

    if run_config is not None and not os.path.exists(run_config.data.path):
        raise DatasetError(f"data.path {run_config.data.path!r}: not found; give a dataset folder, split folder or manifest")
    if resume is not None and not (resume / "config.yaml").is_file():
        raise TrainingError(f"{resume}: not a run directory (no config.yaml); give a folder written by `imgclf train`")
