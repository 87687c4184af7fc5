"""`imgclf check`: audit a dataset folder, manifest or split before training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from imgclf.cli.common import RichReporter, cli_errors, console, err_console, labelled
from imgclf.constants import DEFAULT_MAX_PIXELS, DEFAULT_NEAR_DISTANCE


def check_command(
    data: Path = typer.Argument(..., help="Dataset root, manifest (CSV or folder with manifest.csv) or split folder."),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 4 on leakage, label conflicts or unreadable files."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report with thumbnails."),
    near_distance: int = typer.Option(DEFAULT_NEAR_DISTANCE, "--near-distance", min=0, max=32, help="Perceptual-hash bits (of 64) within which images count as near duplicates."),
    near_duplicates: bool = typer.Option(True, "--near-duplicates/--no-near-duplicates", help="Look for near duplicates as well as exact copies."),
    image_size: int = typer.Option(64, "--image-size", min=1, help="Training size in pixels; images under half of it are listed."),
    max_aspect: float = typer.Option(3.0, "--max-aspect", min=1.0, help="List images whose long side exceeds the short side by more than this factor."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-image-pixels", min=1, help="Images with more pixels (width x height) count as unreadable."),
) -> None:
    """Audit a dataset: class balance, unreadable files, duplicates, leakage, label conflicts, sizes."""
    with cli_errors():
        from imgclf.audit import audit_dataset
        from imgclf.errors import DatasetError

        with RichReporter() as reporter:
            reporter.progress_start("hash", "hashing images", None)
            report = audit_dataset(
                data, near_distance if near_duplicates else None, (image_size, image_size), max_aspect,
                max_image_pixels, progress=lambda done, total: reporter.progress_update("hash", done, total),
            )
            reporter.progress_end("hash")
        if html_path is not None:
            from imgclf.audit_html import write_html

            write_html(report, html_path)
            err_console.print(f"wrote {html_path}", markup=False, highlight=False, soft_wrap=True)
        if json_output:
            typer.echo(json.dumps(report, ensure_ascii=False))
        else:
            render_report(report)
        failures = report["failures"]
        if strict and any(failures.values()):
            names = {"leakage": "groups leaking across splits", "label_conflicts": "groups with conflicting labels",
                     "unreadable": "unreadable files"}
            found = ", ".join(f"{count} {names[name]}" for name, count in failures.items() if count)
            raise DatasetError(f"{data}: the audit found {found}; see the report for the files involved")


def render_report(report: dict) -> None:
    """Print class counts, then one line per kind of finding with the first examples."""
    from rich.table import Table

    table = Table(title=f"{report['n_images']} images in {len(report['classes'])} classes "
                        f"({report['n_files']} files scanned)")
    table.add_column("class", overflow="fold")
    split_counts = report["split_counts"]
    columns = ["train", "val", "test"] if split_counts else []
    for name in columns + ["images"]:
        table.add_column(name, justify="right")
    for name, count in report["classes"].items():
        cells = [str(split_counts[name][split]) for split in columns] if split_counts else []
        table.add_row(Text(name), *cells, str(count))
    console.print(table)
    console.print(f"imbalance ratio (largest / smallest class): {report['imbalance_ratio']}")
    if report["empty_classes"]:
        console.print(labelled("classes without usable images:", "bold red", ", ".join(report["empty_classes"])),
                      highlight=False)
    findings = [
        ("unreadable files", report["unreadable"], lambda item: item["detail"]),
        ("groups leaking across splits", report["leakage"], _describe_group),
        ("groups with conflicting labels", report["label_conflicts"], _describe_group),
        ("duplicate groups", report["duplicate_groups"], _describe_group),
        ("images under half the training size", report["small_images"],
         lambda item: f"{item['path']} ({item['width']}x{item['height']})"),
        ("images with an unusual aspect ratio", report["unusual_aspect_ratios"],
         lambda item: f"{item['path']} ({item['aspect_ratio']}:1)"),
    ]
    for title, items, describe in findings:
        style = "bold red" if items and title.startswith(("unreadable", "groups")) else "default"
        console.print(Text(f"{len(items)} {title}", style=style))
        for item in items[:5]:
            console.print(f"  {describe(item)}", markup=False, highlight=False, soft_wrap=True)
        if len(items) > 5:
            console.print(f"  ... and {len(items) - 5} more (use --json or --html for all)")
    if report["ignored"]:
        console.print(f"{len(report['ignored'])} non-image or system files ignored")


def _describe_group(group: dict) -> str:
    members = []
    for index, path in enumerate(group["paths"]):
        where = f"{group['labels'][index]}" + (f"/{group['splits'][index]}" if group["splits"] else "")
        members.append(f"{path} [{where}]")
    return f"{group['kind']}: " + ", ".join(members)
