"""Shared CLI plumbing: consoles, error handling, logging and Rich progress bars.

stdout carries results (tables, JSON); stderr carries progress, logs and errors.

Exit codes: 0 success, 2 invalid command-line usage (from Click), 3 invalid config,
4 dataset problem, 5 unreadable image, 6 missing or broken model, 7 training failure,
8 operating-system error on a file or folder (`OS_ERROR_EXIT_CODE`), 130 interrupted.
Codes 3 to 7 come from the `imgclf.errors` family.

Names and paths come from users, so text that contains them is printed with `markup=False`
or as `rich.text.Text`. A class folder called `[red]` or a path ending in `[/]` is then shown
as it is instead of being read as Rich markup.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import traceback
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)

OS_ERROR_EXIT_CODE = 8
# The next step for the commonest OS errors; others get DEFAULT_OS_ERROR_FIX.
OS_ERROR_FIXES = {
    errno.ENOTDIR: "check that every parent of this path is a folder, not a file",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENOENT: "check that the folder exists",
    errno.EACCES: "check the permissions of the path and its folder",
    errno.EPERM: "check the permissions of the path and its folder",
    errno.EROFS: "choose a path on a writable file system",
    errno.ENOSPC: "free disk space or choose another disk",
    errno.EPIPE: "the program reading the output stopped before the end",
}
DEFAULT_OS_ERROR_FIX = "check that the folder exists and is writable"

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


def labelled(label: str, style: str, message: str) -> Text:
    """Build a styled label such as "warning:" followed by `message`, which is never read as markup."""
    return Text.assemble((label, style), " ", message)


def print_error(message: str) -> None:
    """Print each line of `message` as one "error:" line on stderr, unwrapped so it stays greppable."""
    for line in message.splitlines() or [""]:
        err_console.print(labelled("error:", "bold red", line), highlight=False, soft_wrap=True)


def describe_os_error(error: OSError) -> str:
    """Describe an OS error in one line: the path or paths, the operating system's reason and the next step."""
    reason = error.strerror or str(error)
    fix = OS_ERROR_FIXES.get(error.errno, DEFAULT_OS_ERROR_FIX)
    if error.filename is None:
        return f"{reason}; {fix}"
    paths = str(error.filename) if error.filename2 is None else f"{error.filename} -> {error.filename2}"
    return f"{paths}: {reason}; {fix}"


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn expected failures and OS errors into one line on stderr and a distinct exit code."""
    from imgclf.errors import ImgclfError

    try:
        yield
    except ImgclfError as error:
        if DEBUG["enabled"]:
            traceback.print_exc(file=sys.stderr)
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None
    except OSError as error:
        if DEBUG["enabled"]:
            traceback.print_exc(file=sys.stderr)
        print_error(describe_os_error(error))
        raise typer.Exit(OS_ERROR_EXIT_CODE) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


class RichReporter:
    """A core `Reporter` that logs messages and draws one Rich progress bar per task on stderr."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._logger = logging.getLogger("imgclf")
        self._progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}", markup=False), console=err_console, transient=True,
        )
        self._tasks: dict[str, int] = {}
        self._drawn = False

    def __enter__(self) -> "RichReporter":
        # Off a terminal the bar is never drawn, and Progress.stop would still print a blank line on stderr.
        self._drawn = err_console.is_terminal
        if self._drawn:
            self._progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._drawn:
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
