"""`imgclf predict`: classify image files, folders and globs with a run's model or an export bundle."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import List, Optional, TextIO

import typer

from imgclf.cli.common import DEBUG, RichReporter, cli_errors, console, err_console, quiet_tensorflow, setup_logging
from imgclf.constants import DEFAULT_MAX_PIXELS

# File name endings `--out` accepts, by the format written.
CSV_SUFFIXES = (".csv",)
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")
# Table rows printed at a time, so a large folder never keeps every result in memory.
TABLE_CHUNK_ROWS = 1000
# Skipped files named per reason in the closing summary.
SKIPPED_EXAMPLES = 3


def predict_command(
    model: Path = typer.Argument(
        ..., help="Run directory, export bundle, or a .keras, .tflite or SavedModel folder inside either."),
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively) and glob patterns."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="How many of the most probable classes to list."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per model call."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-image-pixels", help="Reject images with more pixels than this."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per input on stdout (JSON Lines)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write results to this file as they come: .csv, or .jsonl/.json for JSON Lines."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="LiteRT threads for a .tflite model (default: one per CPU)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Draw a progress bar on stderr."),
) -> None:
    """Predict the class of each image. Exits with code 5 when any input could not be read."""
    setup_logging()
    with cli_errors():
        from imgclf.errors import ImageError
        from imgclf.runs import resolve_model
        from imgclf.scan import iter_files

        _check_out(out)
        files = iter_files(paths)
        resolved = resolve_model(model)
        if resolved.runtime != "tflite":
            quiet_tensorflow()
        predictor = _load_quietly(resolved, max_image_pixels, threads)
        top_k = min(top_k, len(predictor.classes))
        writer = _open_writer(out, json_output, top_k)
        started = time.perf_counter()
        try:
            skipped = _predict_all(predictor, files, writer, top_k, batch_size, progress)
        finally:
            writer.close()
        _summarise(predictor, len(files), skipped, time.perf_counter() - started, out)
        if skipped:
            raise ImageError(f"{len(skipped)} of {len(files)} inputs could not be read (reasons above)")


def _load_quietly(resolved, max_image_pixels: int, threads: Optional[int]):
    """Load the predictor with file descriptor 2 pointed at /dev/null, unless debugging.

    LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ when it
    builds an interpreter, which no Python setting turns off. No other thread writes to stderr
    yet, and Python exceptions still propagate.
    """
    from imgclf.prediction import Predictor

    if DEBUG["enabled"]:
        return Predictor.from_resolved(resolved, max_image_pixels, threads)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            return Predictor.from_resolved(resolved, max_image_pixels, threads)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _predict_all(predictor, files: list[str], writer, top_k: int, batch_size: int, progress: bool) -> list:
    """Stream every file's result into `writer`; return the results that carry an error."""
    skipped = []
    with RichReporter() as reporter:
        if progress:
            reporter.progress_start("predict", "predicting", len(files))

        def batch_done(done: int) -> None:
            writer.flush()
            reporter.progress_update("predict", done, len(files))

        for result in predictor.predict_files(files, top_k=top_k, batch_size=batch_size, progress=batch_done):
            if result.error is not None:
                skipped.append((result.path, result.reason))
            writer.write(result)
        reporter.progress_end("predict")
    return skipped


def _summarise(predictor, n_files: int, skipped: list, seconds: float, out: Optional[Path]) -> None:
    """Log the counts, the speed and the skipped files grouped by reason, on stderr."""
    import logging

    log = logging.getLogger("imgclf")
    n_done = n_files - len(skipped)
    rate = n_files / seconds if seconds > 0 else 0.0
    log.info(f"predicted {n_done:,} of {n_files:,} files in {seconds:.1f} s ({rate:,.0f} files/s) "
             f"with {predictor.runtime.name} ({predictor.source})" + (f"; results in {out}" if out else ""))
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in skipped:
        by_reason[reason].append(path)
    for reason, count in Counter(reason for _, reason in skipped).most_common():
        examples = ", ".join(by_reason[reason][:SKIPPED_EXAMPLES]) + (", ..." if count > SKIPPED_EXAMPLES else "")
        log.info(f"skipped {count:,} as {reason}: {examples}")


def _check_out(out: Optional[Path]) -> None:
    from imgclf.errors import ConfigError

    if out is not None and out.suffix.lower() not in CSV_SUFFIXES + JSON_LINES_SUFFIXES:
        raise ConfigError(f"--out {out}: expected a file name ending in .csv, .jsonl or .json")


def _open_writer(out: Optional[Path], json_output: bool, top_k: int):
    from imgclf.errors import ConfigError

    if out is None:
        return _JsonLinesWriter(sys.stdout, close=False) if json_output else _TableWriter()
    try:
        handle = open(out, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot be written ({exc.strerror})") from None
    if out.suffix.lower() in CSV_SUFFIXES:
        return _CsvWriter(handle, top_k)
    return _JsonLinesWriter(handle, close=True)


class _JsonLinesWriter:
    """One JSON object per result, to a file or stdout."""

    def __init__(self, handle: TextIO, close: bool):
        self._handle, self._close = handle, close

    def write(self, result) -> None:
        self._handle.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close() if self._close else self._handle.flush()


class _CsvWriter:
    """Columns path, class, confidence, class_2, probability_2, ..., class_k, probability_k, error, reason."""

    def __init__(self, handle: TextIO, top_k: int):
        self._handle = handle
        self._writer = csv.writer(handle)
        self._top_k = top_k
        header = ["path", "class", "confidence"]
        for rank in range(2, top_k + 1):
            header += [f"class_{rank}", f"probability_{rank}"]
        self._writer.writerow(header + ["error", "reason"])

    def write(self, result) -> None:
        if result.error is not None:
            self._writer.writerow([result.path, *[""] * (2 * self._top_k), result.error, result.reason])
            return
        ranked = [value for name, probability in result.top_k for value in (name, repr(probability))]
        self._writer.writerow([result.path, *ranked, "", ""])

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class _TableWriter:
    """A Rich table on stdout, printed every `TABLE_CHUNK_ROWS` rows; errors go to stderr at once."""

    def __init__(self):
        self._table = None

    def _new_table(self):
        from rich.table import Table

        table = Table()
        for column in ("path", "class", "confidence", "top k"):
            table.add_column(column, justify="right" if column == "confidence" else "left",
                             overflow="fold" if column == "path" else "ellipsis")
        return table

    def write(self, result) -> None:
        if result.error is not None:
            err_console.print(f"[red]error:[/] {result.error}", highlight=False)
            return
        if self._table is None:
            self._table = self._new_table()
        others = ", ".join(f"{name} {probability:.3f}" for name, probability in result.top_k[1:])
        self._table.add_row(result.path, result.label, f"{result.confidence:.4f}", others)
        if self._table.row_count >= TABLE_CHUNK_ROWS:
            self.close()

    def flush(self) -> None:
        """Rows are printed a chunk at a time, so there is nothing to flush per batch."""

    def close(self) -> None:
        if self._table is not None and self._table.row_count:
            console.print(self._table)
        self._table = None
