"""Shared CLI plumbing: consoles, error handling, logging and Rich progress bars.

stdout carries results (tables, JSON); stderr carries progress, logs and errors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from typing import Iterator, Optional

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

DEBUG = {"enabled": bool(os.environ.get("IMGCLF_DEBUG"))}


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up messages hidden, unless debugging.

    TensorFlow 2.21 writes oneDNN, CUDA-stub and cuInit notices to file descriptor 2 before
    `TF_CPP_MIN_LOG_LEVEL` takes effect, so stderr is pointed at /dev/null while it imports
    and finds its devices. Python exceptions raised meanwhile still propagate.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if DEBUG["enabled"] or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def setup_logging(verbose: bool = False) -> None:
    """Send the `imgclf` logger to stderr: Rich formatting on a terminal, plain lines otherwise."""
    if err_console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_time=False, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("imgclf")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures into one line on stderr and the failure's exit code."""
    from imgclf.errors import ImgclfError

    try:
        yield
    except ImgclfError as error:
        if DEBUG["enabled"]:
            traceback.print_exc(file=sys.stderr)
        for line in str(error).splitlines():
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


class RichReporter:
    """A core `Reporter` that logs messages and draws one Rich progress bar per task on stderr."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._logger = logging.getLogger("imgclf")
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"), console=err_console, transient=True,
        )
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "RichReporter":
        self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._progress.stop()

    def message(self, text: str) -> None:
        self._logger.info(text)

    def progress_start(self, key: str, description: str, total: Optional[int]) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total, figures="")

    def progress_update(self, key: str, completed: int, total: Optional[int] = None, **fields) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        figures = "  ".join(f"{name} {value:.4f}" for name, value in fields.items())
        self._progress.update(task, completed=completed, total=total, figures=figures)

    def progress_end(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._progress.remove_task(task)
