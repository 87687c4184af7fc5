"""`imgclf verify`: check an export bundle again in this process, away from the export that wrote it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.text import Text

from imgclf.cli.common import RichReporter, cli_errors, console, quiet_tensorflow, setup_logging


def verify_command(
    bundle: Path = typer.Argument(..., help="Bundle folder written by `imgclf export`."),
    images: Optional[List[str]] = typer.Option(
        None, "--images",
        help="Image files, folders or globs to compare on, instead of the validation images the export used."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as one JSON object on stdout."),
) -> None:
    """Check file hashes, Keras safe-mode loading and every file's parity. Exits with code 6 on a failure."""
    setup_logging()
    with cli_errors():
        from imgclf.bundle import read_bundle
        from imgclf.errors import ModelError
        from imgclf.scan import iter_files

        # Reading the manifest and listing the images first makes a mistyped path fail before
        # TensorFlow's start-up seconds.
        read_bundle(bundle)
        files = iter_files(images) if images else None
        quiet_tensorflow()
        from imgclf.export import verify_bundle

        with RichReporter() as reporter:
            report = verify_bundle(bundle, files, reporter)
        if json_output:
            typer.echo(json.dumps(report, ensure_ascii=False))
        else:
            _render(report)
        if not report["passed"]:
            failed = [item["key"] for item in report["artifacts"]
                      if not item["sha256_ok"] or not item.get("parity", {}).get("passed", False)]
            where = "the JSON report on stdout" if json_output else "the table above"
            raise ModelError(f"{bundle}: {', '.join(failed)} failed verification (see {where}); export the run again")


def _render(report: dict) -> None:
    from rich.table import Table

    table = Table(title=Text(f"{report['bundle']}: {report['n_images']} images ({report['images_from']})"))
    for column in ("file", "SHA-256", "max abs diff", "top-1 agreement", "criterion", "result"):
        table.add_column(column, justify="right" if column in ("max abs diff", "top-1 agreement") else "left",
                         overflow="fold" if column in ("file", "criterion") else "ellipsis")
    for item in report["artifacts"]:
        parity = item.get("parity")
        passed = item["sha256_ok"] and parity is not None and parity["passed"]
        table.add_row(
            Text(item["path"]),
            "ok" if item["sha256_ok"] else "[red]changed or missing[/]",
            f"{parity['max_abs_diff']:.1e}" if parity else "",
            f"{parity['top1_agreement']:.2%}" if parity else "",
            Text(parity["criterion"] if parity else ""),
            "[green]pass[/]" if passed else "[red]FAIL[/]",
        )
    console.print(table)
    console.print("model.keras loads in Keras safe mode")
