"""A self-contained HTML page for an audit report, with thumbnails of duplicate groups embedded."""

from __future__ import annotations

import html
import os
from typing import Optional

from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.imageio import thumbnail_data_uri

THUMBNAIL_PIXELS = 96
MAX_GROUPS_SHOWN = 200

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
td.n { text-align: right; }
.group { border: 1px solid #ddd; margin: 0.5em 0; padding: 0.5em; }
.group.bad { border-color: #c33; }
figure { display: inline-block; margin: 4px; text-align: center; font-size: 11px; max-width: 140px; word-break: break-all; }
img { max-width: 96px; max-height: 96px; display: block; margin: auto; }
.fail { color: #c33; font-weight: bold; }
"""


def _thumbnail(path: str, max_pixels: int) -> Optional[str]:
    return thumbnail_data_uri(path, THUMBNAIL_PIXELS, max_pixels, quality=80)


def _group_html(group: dict, max_pixels: int) -> str:
    leak = len(set(group["splits"])) > 1
    conflict = len(set(group["labels"])) > 1
    flags = [text for text, present in (("leakage across splits", leak), ("label conflict", conflict)) if present]
    figures = []
    for index, path in enumerate(group["paths"]):
        source = _thumbnail(path, max_pixels)
        caption = group["labels"][index] + (f" / {group['splits'][index]}" if group["splits"] else "")
        image = f'<img src="{source}" alt="">' if source else "(unreadable)"
        figures.append(f"<figure>{image}<figcaption>{html.escape(caption)}<br>"
                       f"{html.escape(os.path.basename(path))}</figcaption></figure>")
    title = f"{group['kind']} duplicates, {len(group['paths'])} files"
    if flags:
        title += ": " + ", ".join(flags)
    css = "group bad" if flags else "group"
    return f'<div class="{css}"><div>{html.escape(title)}</div>{"".join(figures)}</div>'


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in headers)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{value}</td>' if isinstance(value, (int, float)) else f"<td>{html.escape(str(value))}</td>"
            for value in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict) -> str:
    """Return the audit report as one HTML document."""
    failures = report["failures"]
    parts = [f"<h1>Dataset audit</h1><p>{html.escape(report['source'])}: {report['n_images']} images in "
             f"{len(report['classes'])} classes, {report['n_files']} files scanned; imbalance ratio "
             f"{report['imbalance_ratio']}.</p>"]
    summary = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in failures.items())
    css = "fail" if any(failures.values()) else ""
    parts.append(f'<p class="{css}">Problems that fail --strict: {html.escape(summary)}</p>')

    split_counts = report.get("split_counts") or {}
    if split_counts:
        rows = [[name, *split_counts[name].values(), report["classes"][name]] for name in report["classes"]]
        parts.append("<h2>Images per class</h2>" + _table(["class", "train", "val", "test", "total"], rows))
    else:
        parts.append("<h2>Images per class</h2>" + _table(["class", "images"], [[n, c] for n, c in report["classes"].items()]))

    groups = report["duplicate_groups"]
    parts.append(f"<h2>Duplicate groups ({len(groups)})</h2>")
    ordered = sorted(groups, key=lambda g: (len(set(g["splits"])) <= 1 and len(set(g["labels"])) <= 1, g["paths"][0]))
    # The audit's pixel limit applies, so an image it accepted under a raised limit still gets a thumbnail.
    max_pixels = report.get("max_image_pixels", DEFAULT_MAX_PIXELS)
    parts.extend(_group_html(group, max_pixels) for group in ordered[:MAX_GROUPS_SHOWN])
    if len(groups) > MAX_GROUPS_SHOWN:
        parts.append(f"<p>... and {len(groups) - MAX_GROUPS_SHOWN} more groups in the JSON report.</p>")

    for key, title in (("skipped", "Skipped files"), ("ignored", "Ignored files")):
        rows = [[issue["path"], issue["reason"], issue["detail"]] for issue in report[key]]
        parts.append(f"<h2>{title} ({len(rows)})</h2>" + (_table(["path", "reason", "detail"], rows) if rows else ""))
    small = [[item["path"], item["label"], f"{item['width']}x{item['height']}"] for item in report["small_images"]]
    parts.append(f"<h2>Images under half the training size {report['image_size']} ({len(small)})</h2>"
                 + (_table(["path", "class", "size"], small) if small else ""))
    odd = [[item["path"], item["label"], item["aspect_ratio"]] for item in report["unusual_aspect_ratios"]]
    parts.append(f"<h2>Aspect ratio over {report['max_aspect_ratio']} ({len(odd)})</h2>"
                 + (_table(["path", "class", "aspect ratio"], odd) if odd else ""))
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>imgclf dataset audit</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")


def write_html(report: dict, path: str | os.PathLike) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(report))
