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
from rich.text import Text

from imgclf.cli.common import (
    DEBUG, RichReporter, cli_errors, console, err_console, labelled, quiet_tensorflow, setup_logging,
)
from imgclf.constants import DEFAULT_MAX_PIXELS

# File name endings `--out` accepts, by the format written.
CSV_SUFFIXES = (".csv",)
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")
# Table rows printed at a time, so a large folder never keeps every result in memory.
TABLE_CHUNK_ROWS = 1000
# Skipped files named per reason in the closing summary.
SKIPPED_EXAMPLES = 3
# Characters that make an argument that is not an existing path a glob pattern.
GLOB_CHARACTERS = "*?["


def predict_command(
    model: Path = typer.Argument(
        ..., help="Run directory, export bundle, or a .keras, .tflite or SavedModel folder inside either."),
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively) and glob patterns."),
    top_k: int = typer.Option(3, "--top-k", "-k", min=1, help="How many of the most probable classes to list."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per model call."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-image-pixels", min=1, help="Reject images with more pixels (width x height) than this."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object per input on stdout (JSON Lines)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write results to this file as they come: .csv, or .jsonl/.json for JSON Lines."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="LiteRT threads for a .tflite model (default: one per CPU)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Draw a progress bar on stderr."),
    unknown_threshold: Optional[float] = typer.Option(
        None, "--unknown-threshold", min=0.0, max=1.0,
        help="Answer \"unknown\" (with the best guess kept) when the calibrated confidence is below this."),
    calibrated: bool = typer.Option(
        True, "--calibrated/--raw", help="Scale probabilities by the temperature fitted on the validation split."),
) -> None:
    """Predict the class of each image. Exits with code 5 when any input could not be read."""
    setup_logging()
    with cli_errors():
        from imgclf.errors import ImageError
        from imgclf.runs import resolve_model

        _check_out(out)
        files = _expand_inputs(paths)
        resolved = resolve_model(model)
        if resolved.runtime != "tflite":
            quiet_tensorflow()
        predictor = _load_quietly(resolved, max_image_pixels, threads)
        predictor.unknown_threshold = unknown_threshold
        if not calibrated:
            predictor.temperature = 1.0
        top_k = min(top_k, len(predictor.classes))
        writer = _open_writer(out, json_output, top_k)
        started = time.perf_counter()
        try:
            skipped = _predict_all(predictor, files, writer, top_k, batch_size, progress, max_image_pixels)
        finally:
            writer.close()
        _summarise(predictor, len(files), skipped, time.perf_counter() - started, out)
        if skipped:
            raise ImageError(f"{len(skipped)} of {len(files)} inputs could not be read; {_where_errors_are(out, json_output)}")


def _expand_inputs(entries: List[str]) -> list[str]:
    """Expand files, folders (searched recursively) and glob patterns into a de-duplicated file list.

    This replaces `imgclf.scan.iter_files` here for two reasons. An entry that exists is
    taken literally, even when its name contains `*`, `?` or `[`. And a file found inside a
    folder is predicted only when its extension is an image extension, while the others are
    counted in one line on stderr. A file named on the command line or matched by a pattern is
    always predicted, whatever its extension.

    Raises:
        DatasetError: for a path that does not exist, a pattern that matches nothing, or a
            folder named on the command line that contains no image file.
    """
    import glob

    from imgclf.errors import DatasetError

    files: list[str] = []
    n_ignored = 0
    for entry in entries:
        if os.path.exists(entry):
            matches, named = [entry], True
        elif any(character in entry for character in GLOB_CHARACTERS):
            matches, named = sorted(glob.glob(entry, recursive=True)), False
            if not matches:
                raise DatasetError(f"{entry}: the pattern matches no file")
        else:
            raise DatasetError(f"{entry}: file or folder not found")
        for match in matches:
            if not os.path.isdir(match):
                files.append(match)
                continue
            images, others = _folder_images(match)
            if named and not images:
                raise DatasetError(_empty_folder_message(match, others))
            files.extend(images)
            n_ignored += others
    if n_ignored:
        err_console.print(f"ignored {_count(n_ignored, 'non-image file')} found in folders (no image extension); "
                          "name such a file on the command line to predict it anyway",
                          markup=False, highlight=False, soft_wrap=True)
    return list(dict.fromkeys(files))


def _folder_images(folder: str) -> tuple[list[str], int]:
    """List the files under `folder` that have an image extension, and count the other files."""
    from imgclf.scan import IMAGE_EXTENSIONS, walk_files

    images, n_others = [], 0
    for path in walk_files(Path(folder), []):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(str(path))
        else:
            n_others += 1
    return images, n_others


def _empty_folder_message(folder: str, n_others: int) -> str:
    if n_others == 0:
        return f"{folder}: no files found under {folder}; give a folder that contains images"
    return (f"{folder}: no image files found under {folder}, only {_count(n_others, 'file')} without an image extension; "
            "name such a file on the command line to predict it anyway")


def _count(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _where_errors_are(out: Optional[Path], json_output: bool) -> str:
    """Name where the failed inputs' error messages went, for the closing error line."""
    if out is not None and out.suffix.lower() in CSV_SUFFIXES:
        return f"see the error column of {out}"
    if out is not None:
        return f"see the error records in {out}"
    if json_output:
        return "see the error records on stdout"
    return "see the error lines above"


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


def _predict_all(predictor, files: list[str], writer, top_k: int, batch_size: int, progress: bool,
                 max_image_pixels: int) -> list:
    """Stream every file's result into `writer`; return the (path, reason) of each result with an error."""
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
            if result.reason == "too_many_pixels":
                result.error = _point_to_pixel_option(result.error, max_image_pixels)
            writer.write(result)
        reporter.progress_end("predict")
    return skipped


def _point_to_pixel_option(error: str, max_image_pixels: int) -> str:
    """Name --max-image-pixels in a too-many-pixels error, where the decoder names data.max_image_pixels."""
    if "data.max_image_pixels" in error:
        return error.replace("data.max_image_pixels", "--max-image-pixels")
    return f"{error}; raise --max-image-pixels (now {max_image_pixels:,}) if the file is trusted"


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
                             overflow="ellipsis" if column == "confidence" else "fold")
        return table

    def write(self, result) -> None:
        if result.error is not None:
            err_console.print(labelled("error:", "red", result.error), highlight=False, soft_wrap=True)
            return
        if self._table is None:
            self._table = self._new_table()
        others = ", ".join(f"{name} {probability:.3f}" for name, probability in result.top_k[1:])
        self._table.add_row(Text(result.path), Text(result.label), f"{result.confidence:.4f}", Text(others))
        if self._table.row_count >= TABLE_CHUNK_ROWS:
            self.close()

    def flush(self) -> None:
        """Rows are printed a chunk at a time, so there is nothing to flush per batch."""

    def close(self) -> None:
        if self._table is not None and self._table.row_count:
            console.print(self._table)
        self._table = None
