"""The evaluation report: one self-contained HTML file with metrics, plots and an error gallery."""

from __future__ import annotations

import base64
import html
import io
import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from imgclf.imageio import thumbnail_data_uri

GALLERY_SIZE = 48
THUMBNAIL_PIXELS = 112

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures img { max-width: 100%; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; }
.gallery figure { margin: 0; width: 130px; font-size: 11px; text-align: center; word-break: break-all; }
.gallery img { width: 112px; height: 112px; object-fit: contain; background: #eee; }
.wrong { color: #b22; }
"""


def _figure_png(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # Class names with emoji or rare scripts lack glyphs in matplotlib's default font.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figures(matrix: list[list[int]], classes: list[str]) -> str:
    """Counts and row-normalised (recall) confusion matrices side by side, as a PNG data URI."""
    plt = _pyplot()
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(3.5, 0.45 * len(classes) + 2)
    figure, axes = plt.subplots(1, 2, figsize=(2 * size, size))
    for axis, values, title, text in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], normalised, "normalised by true class", "{:.2f}")):
        axis.imshow(values, cmap="Blues")
        axis.set_title(title)
        axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(len(classes)), classes, fontsize=8)
        axis.set_xlabel("predicted class")
        axis.set_ylabel("true class")
        if len(classes) <= 20:
            threshold = values.max() / 2 if values.size else 0
            for row in range(len(classes)):
                for column in range(len(classes)):
                    axis.text(column, row, text.format(values[row, column]), ha="center", va="center", fontsize=7,
                              color="white" if values[row, column] > threshold else "black")
    figure.tight_layout()
    return _figure_png(figure)


def reliability_figure(raw: dict, calibrated: Optional[dict], temperature: Optional[float]) -> str:
    """Reliability diagram: accuracy per confidence bin against the diagonal, raw and calibrated."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for data, label, colour in ((raw, f"model (ECE {raw['ece']:.3f})", "tab:red"),
                                (calibrated, f"temperature {temperature:.2f} (ECE {calibrated['ece']:.3f})" if calibrated else "", "tab:blue")):
        if not data:
            continue
        points = [(item["confidence"], item["accuracy"]) for item in data["bins"] if item["count"]]
        if points:
            xs, ys = zip(*points)
            axis.plot(xs, ys, marker="o", color=colour, label=label)
    axis.set_xlabel("confidence (top probability)")
    axis.set_ylabel("accuracy")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.legend(loc="upper left", fontsize=8)
    return _figure_png(figure)


def training_curves_figure(history: list[dict]) -> Optional[str]:
    """Loss and accuracy per epoch for train and val, with phase changes marked."""
    if not history:
        return None
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + metric) for row in history]
            if any(value is not None for value in values):
                axis.plot(epochs, values, style, label=(prefix or "train_") + metric)
        for previous, row in zip(history, history[1:]):
            if row.get("phase") != previous.get("phase"):
                axis.axvline(row["epoch"] - 0.5, color="grey", linewidth=0.8)
                axis.text(row["epoch"] - 0.5, axis.get_ylim()[1], f" {row.get('phase')}", fontsize=7, va="top")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return _figure_png(figure)


def _thumbnail(path: str) -> Optional[str]:
    return thumbnail_data_uri(path, THUMBNAIL_PIXELS)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append(f'<td class="n">{value:.4f}</td>')
            elif isinstance(value, int):
                cells.append(f'<td class="n">{value}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _gallery(errors: list[dict]) -> str:
    figures = []
    for error in errors[:GALLERY_SIZE]:
        source = _thumbnail(error["path"])
        image = f'<img src="{source}" alt="">' if source else "<div>(unreadable)</div>"
        figures.append(
            f"<figure>{image}<figcaption>true <b>{html.escape(error['true'])}</b><br>"
            f'<span class="wrong">predicted {html.escape(error["predicted"])} ({error["confidence"]:.2f})</span><br>'
            f"loss {error['loss']:.2f}<br>{html.escape(Path(error['path']).name)}</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(figures)}</div>'


def render_report(run_name: str, metrics: dict, history: list[dict]) -> str:
    """Build the HTML page from evaluation metrics (see `imgclf.evaluation.evaluate_run`) and the run history."""
    classes = metrics["classes"]
    calibration = metrics["calibration"]
    parts = [f"<h1>{html.escape(run_name)}</h1>",
             f"<p>{html.escape(metrics['split'])} split: {metrics['n_images']} images, accuracy "
             f"<b>{metrics['accuracy']:.4f}</b>, macro F1 {metrics['macro_f1']:.4f}"
             + (f", top-3 accuracy {metrics['top3_accuracy']:.4f}" if "top3_accuracy" in metrics else "") + "</p>"]
    rows = [[name, row["precision"], row["recall"], row["f1"], row["support"]] for name, row in metrics["per_class"].items()]
    rows.append(["macro average", metrics["macro_precision"], metrics["macro_recall"], metrics["macro_f1"], metrics["n_images"]])
    parts.append("<h2>Per-class metrics</h2>" + _table(["class", "precision", "recall", "F1", "support"], rows))
    parts.append('<h2>Confusion matrix</h2><div class="figures">'
                 f'<img alt="confusion matrix" src="{confusion_figures(metrics["confusion_matrix"], classes)}"></div>')
    pairs = [[pair["true"], pair["predicted"], pair["count"]] for pair in metrics["most_confused"]]
    parts.append("<h2>Most confused pairs</h2>" + (_table(["true class", "predicted as", "images"], pairs) if pairs
                                                    else "<p>No image was misclassified.</p>"))
    errors = metrics["misclassified"]
    parts.append(f"<h2>Misclassified images ({len(errors)}, highest loss first"
                 + (f", first {GALLERY_SIZE} shown" if len(errors) > GALLERY_SIZE else "") + ")</h2>" + _gallery(errors))
    temperature = calibration.get("temperature")
    parts.append("<h2>Calibration</h2>"
                 f"<p>Expected calibration error {calibration['raw']['ece']:.4f}"
                 + (f"; with temperature {temperature:.3f} (fitted on val) {calibration['calibrated']['ece']:.4f}"
                    if calibration.get("calibrated") else "") + ".</p>"
                 f'<div class="figures"><img alt="reliability diagram" src="'
                 f'{reliability_figure(calibration["raw"], calibration.get("calibrated"), temperature)}"></div>')
    coverage = [[row["threshold"], row["coverage"], row["accuracy"] if row["accuracy"] is not None else "-"]
                for row in metrics["coverage"]]
    parts.append("<h3>Answering \"unknown\" below a confidence threshold</h3>"
                 + _table(["threshold", "coverage", "accuracy on answered"], coverage))
    curves = training_curves_figure(history)
    if curves:
        parts.append(f'<h2>Training curves</h2><div class="figures"><img alt="training curves" src="{curves}"></div>')
    parts.append(f"<details><summary>Metrics as JSON</summary><pre>"
                 f"{html.escape(json.dumps({k: v for k, v in metrics.items() if k != 'misclassified'}, indent=1))}"
                 "</pre></details>")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(run_name)}: evaluation</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")
