"""`imgclf import`: turn an annotation export into manifest.csv, classes.json and import_report.json."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from imgclf.cli.common import RichReporter, cli_errors, console, err_console, labelled
from imgclf.constants import DEFAULT_MAX_PIXELS


class ExportFormat(str, Enum):
    csv = "csv"
    cvat = "cvat"
    label_studio = "label-studio"
    roboflow = "roboflow"
    voc = "voc"


def import_command(
    export_format: ExportFormat = typer.Argument(
        ..., metavar="FORMAT",
        help="csv, cvat (CVAT for images 1.1 XML), label-studio (JSON or JSON-MIN), roboflow "
             "(classification export folder) or voc (Pascal VOC / LabelImg XML).",
    ),
    src: Path = typer.Argument(..., metavar="SRC", help="The export file; for roboflow the export folder, for voc an XML file or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="New or empty folder to write manifest.csv, classes.json and import_report.json."),
    images_root: Optional[Path] = typer.Option(
        None, "--images-root",
        help="Folder that image paths resolve against and must stay inside. Default: the export file's folder "
             "(cvat: its images/ sub-folder when present).",
    ),
    copy_images: bool = typer.Option(False, "--copy/--no-copy", help="Copy the images into OUT/images/<label>/ and list the copies."),
    crops: bool = typer.Option(False, "--crops/--no-crops", help="voc: write each object's box as a PNG into OUT/crops/<label>/."),
    margin: float = typer.Option(0.0, "--margin", help="voc with --crops: widen each box by this fraction of its width and height on every side."),
    path_column: Optional[str] = typer.Option(None, "--path-column", help="csv: image path column (default path); label-studio: image key (default image)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="csv: label column (default label); label-studio JSON-MIN: choice field (default: detected)."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-image-pixels", min=1, help="Report images with more pixels (width x height) than this instead of importing them."),
    json_output: bool = typer.Option(False, "--json", help="Print the import report as JSON on stdout."),
) -> None:
    """Import an annotation export as a dataset folder, reporting each item not imported with its reason."""
    with cli_errors():
        from imgclf.importers import ImportOptions, import_annotations

        options = ImportOptions(
            images_root=images_root, copy_images=copy_images, crops=crops, margin=margin,
            path_column=path_column, label_column=label_column, max_pixels=max_image_pixels,
        )
        with RichReporter() as reporter:
            reporter.progress_start("check", f"checking images of {src}", None)
            result = import_annotations(
                export_format.value, src, out, options,
                progress=lambda done, total: reporter.progress_update("check", done, total),
            )
            reporter.progress_end("check")
        if json_output:
            typer.echo(json.dumps(result.report, ensure_ascii=False))
            return
        render_import_summary(result.report)
        err_console.print(f"wrote {out}/manifest.csv, classes.json and import_report.json",
                          markup=False, highlight=False, soft_wrap=True)


def render_import_summary(report: dict) -> None:
    """Print images per class (per split when the export had splits), then what was not imported and why."""
    from rich.table import Table

    console.print(f"{report['n_imported']} of {report['n_items']} items imported "
                  f"in {len(report['classes'])} classes ({report['format']})", markup=False, highlight=False)
    table = Table()
    table.add_column("class", overflow="fold")
    by_split = report.get("counts_by_split")
    split_names = ("train", "val", "test") if by_split else ()
    for name in split_names + ("images",):
        table.add_column(name, justify="right")
    for label in report["classes"]:
        cells = [str(by_split[label][name]) for name in split_names]
        table.add_row(Text(label), *cells, str(report["counts"][label]))
    console.print(table)

    by_reason = report["not_imported_by_reason"]
    if by_reason:
        reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in by_reason.items())
        console.print(f"not imported: {report['n_not_imported']} items ({reasons})", markup=False, highlight=False)
    for issue in report["not_imported"][:10]:
        path = f" ({issue['path']})" if issue["path"] and issue["path"] != issue["item"] else ""
        err_console.print(f"  {issue['item']}{path}: {issue['reason']}: {issue['detail']}",
                          markup=False, highlight=False, soft_wrap=True)
    if len(report["not_imported"]) > 10:
        err_console.print(f"  ... and {len(report['not_imported']) - 10} more, listed in import_report.json")
    if report.get("classes_without_images"):
        console.print(labelled("warning:", "yellow", "labels without an imported image: "
                               f"{', '.join(repr(name) for name in report['classes_without_images'])}; they are left "
                               "out of classes.json, so no model will predict them"), highlight=False, soft_wrap=True)
    for names in report["similar_class_names"]:
        console.print(labelled("warning:", "yellow", f"labels {', '.join(repr(name) for name in names)} differ only "
                               "in letter case or Unicode normalization; they are kept as separate classes"),
                      highlight=False, soft_wrap=True)
