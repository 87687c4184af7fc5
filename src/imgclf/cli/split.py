"""`imgclf split`: stratified train/val/test manifests for a dataset folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rich.text import Text

from imgclf.cli.common import RichReporter, cli_errors, console, err_console, labelled
from imgclf.constants import DEFAULT_MAX_PIXELS, DEFAULT_NEAR_DISTANCE, DEFAULT_RATIOS


def split_command(
    src: Path = typer.Argument(..., help="Dataset root: one sub-folder per class, or train/ val/ test/ folders of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write train.csv, val.csv, test.csv, classes.json and split_report.json."),
    ratios: str = typer.Option(DEFAULT_RATIOS, "--ratios", help="Train, val and test shares, summing to 1."),
    seed: int = typer.Option(42, "--seed", min=0, help="Random seed, 0 or more; the same seed gives the same split."),
    max_image_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-image-pixels", min=1, help="Skip images with more pixels (width x height) than this."),
    drop_empty_classes: bool = typer.Option(False, "--drop-empty-classes/--no-drop-empty-classes", help="Leave out class folders without usable images instead of failing."),
    near_distance: int = typer.Option(DEFAULT_NEAR_DISTANCE, "--near-distance", min=0, max=32, help="Images whose perceptual hashes differ in at most this many of 64 bits share a split."),
    near_duplicates: bool = typer.Option(True, "--near-duplicates/--no-near-duplicates", help="Group near duplicates (exact copies are always grouped)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", metavar="REGEX", help="Keep images whose relative paths give the same match (first group if any) in one split, e.g. '^[^/]+/(plant\\d+)_'."),
    json_output: bool = typer.Option(False, "--json", help="Print the split report as JSON on stdout."),
) -> None:
    """Split a folder of class folders into stratified train/val/test manifests (no files are copied)."""
    with cli_errors():
        from imgclf.scan import scan_dataset
        from imgclf.splitting import data_warnings, parse_ratios, split_scan, write_split

        shares = parse_ratios(ratios)
        _check_out_is_outside(src, out)
        with RichReporter() as reporter:
            reporter.progress_start("scan", f"scanning {src}", None)
            scan = scan_dataset(src, max_image_pixels,
                                progress=lambda done, total: reporter.progress_update("scan", done, total))
            reporter.progress_end("scan")
        split = split_scan(scan, shares, seed, drop_empty_classes, near_distance if near_duplicates else None, group_by)
        folder = write_split(split, out)
        if json_output:
            typer.echo(json.dumps(json.loads((folder / "split_report.json").read_text("utf-8")), ensure_ascii=False))
            return
        render_split_summary(split.report, split.classes, data_warnings(split))
        err_console.print(f"wrote {folder}/train.csv, val.csv, test.csv, classes.json and split_report.json",
                          markup=False, highlight=False, soft_wrap=True)


def _check_out_is_outside(src: Path, out: Path) -> None:
    """Reject an `--out` folder inside a dataset folder, where the next scan would take it for a class."""
    from imgclf.errors import ConfigError
    from imgclf.scan import manifest_path

    if not src.is_dir() or manifest_path(src) is not None:
        return
    if out.resolve().is_relative_to(src.resolve()):
        raise ConfigError(
            f"--out {out}: inside the dataset folder {src}, where the next scan would read the manifests "
            "folder as a class; write the split next to the dataset instead, e.g. --out "
            f"{src.resolve().parent / (src.resolve().name + '-split')}"
        )


def render_split_summary(report: dict, classes: list[str], warnings: list[str]) -> None:
    """Print per-class counts per split, then what was skipped or ignored and why."""
    from rich.table import Table

    table = Table(title=f"{report['images_used']} images in {len(classes)} classes ({report['files_scanned']} files scanned)")
    table.add_column("class", overflow="fold")
    for name in ("train", "val", "test", "total"):
        table.add_column(name, justify="right")
    for name in classes:
        row = report["counts"][name]
        table.add_row(Text(name), str(row["train"]), str(row["val"]), str(row["test"]), str(sum(row.values())))
    totals = report["totals"]
    table.add_row("[bold]all[/]", str(totals["train"]), str(totals["val"]), str(totals["test"]), str(report["images_used"]))
    console.print(table)
    for kind in ("skipped", "ignored"):
        by_reason = report[f"{kind}_by_reason"]
        if by_reason:
            reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(by_reason.items()))
            console.print(f"{kind}: {len(report[kind])} files ({reasons})", markup=False)
    for issue in report["skipped"][:10]:
        err_console.print(f"  skipped {issue['path']}: {issue['detail']}", markup=False, highlight=False, soft_wrap=True)
    if len(report["skipped"]) > 10:
        err_console.print(f"  ... and {len(report['skipped']) - 10} more, listed in split_report.json")
    if report["duplicate_groups"]:
        console.print(f"duplicates: {len(report['duplicate_groups'])} groups of identical files, each kept in one split")
    if report.get("kept_together"):
        console.print(f"kept together: {len(report['kept_together'])} groups of near duplicates or same-subject images "
                      "(listed in split_report.json under kept_together)")
    if report["leakage_across_given_splits"]:
        console.print(labelled("warning:", "yellow", f"{len(report['leakage_across_given_splits'])} groups of identical "
                               "files sit in different given splits (listed in split_report.json under "
                               "leakage_across_given_splits)"), soft_wrap=True)
    for warning in warnings:
        console.print(labelled("warning:", "yellow", warning), highlight=False, soft_wrap=True)
    if report["empty_classes_dropped"]:
        console.print(labelled("warning:", "yellow", "dropped class folders without images: "
                               + ", ".join(report["empty_classes_dropped"])), highlight=False, soft_wrap=True)
