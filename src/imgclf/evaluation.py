"""Evaluation of a run's model on one of its splits: metrics, confusion matrix, plots."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from imgclf.errors import DatasetError, ModelError
from imgclf.progress import Reporter
from imgclf.runs import RUN_FILE, read_json, write_json
from imgclf.splitting import SPLITS, read_split


def compute_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro and weighted averages, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true: int array (N,) of class indices.
        probabilities: float array (N, n_classes).
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

    labels = list(range(len(classes)))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    result = {
        "n_images": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    if len(classes) > 3:
        result["top3_accuracy"] = float(top_k_accuracy_score(y_true, probabilities, k=3, labels=labels))
    return result


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """Save the confusion matrix as a PNG heat map with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(matrix)
    size = max(4.0, 0.55 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title, fontsize=9, wrap=True)
    threshold = counts.max() / 2 if counts.size else 0
    for row in range(counts.shape[0]):
        for column in range(counts.shape[1]):
            axis.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=8,
                      color="white" if counts[row, column] > threshold else "black")
    figure.tight_layout()
    with warnings.catch_warnings():
        # Class names with emoji or rare scripts lack glyphs in matplotlib's default font.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(path, dpi=110)
    plt.close(figure)


def evaluate_run(run_dir: str | Path, split_name: str = "test", reporter: Optional[Reporter] = None) -> dict:
    """Evaluate a run's model on `split_name`.

    Writes `evaluation/<split>_metrics.json`, `<split>_confusion_matrix.json` and
    `<split>_confusion_matrix.png`, and the HTML report (`report.html` for the test split,
    `report_<split>.html` otherwise) in the run directory.

    Returns the metrics dict (see `compute_metrics`) with `split`, `skipped`, the error
    analysis (`error_analysis`), `calibration` and the `coverage` curve added.
    """
    from imgclf.config import load_config
    from imgclf.pipeline import decode_split
    from imgclf.prediction import Predictor

    reporter = reporter or Reporter()
    run = Path(run_dir)
    if split_name not in SPLITS:
        raise DatasetError(f"--split {split_name!r}: expected one of {', '.join(SPLITS)}")
    if not (run / RUN_FILE).is_file():
        raise ModelError(f"{run_dir}: not a finished run directory (no {RUN_FILE}); give a folder written by `imgclf train`")
    record = read_json(run / RUN_FILE)
    config = load_config(run / "config.yaml")
    split_folder = record["data"].get("split_folder")
    split = read_split(split_folder if split_folder else config.data.path)
    if split.manifest_hash() != record["data"].get("manifest_sha256", split.manifest_hash()):
        raise DatasetError(
            f"{split.folder}: the split changed after {run.name} was trained (its manifest hash differs from run.json), "
            "so its test images may have been training images; evaluate on the split the run was trained on"
        )
    rows = split.rows[split_name]
    if not rows:
        others = [name for name in SPLITS if split.rows[name] and name != split_name]
        raise DatasetError(f"{split.folder}: the {split_name} split is empty; try --split {others[-1] if others else 'val'}")

    predictor = Predictor.load(run, config.data.max_image_pixels)
    if predictor.classes != split.classes:
        raise ModelError(f"{run}: classes.json does not match the split's classes.json; the split was changed after training")
    reporter.progress_start("decode", f"decoding {split_name}", len(rows))
    decoded = decode_split(rows, split.classes, predictor.image_size, config.data.cache_dir, config.data.max_image_pixels,
                           progress=lambda done, total: reporter.progress_update("decode", done, total))
    reporter.progress_end("decode")
    if len(decoded) == 0:
        raise DatasetError(
            f"{split.folder}: none of the {len(rows)} {split_name} images could be read "
            f"(first: {decoded.skipped[0].detail}); restore the files or split again"
        )
    probabilities = np.concatenate([
        predictor.predict_arrays(decoded.images[start:start + 256]) for start in range(0, len(decoded), 256)
    ]) if len(decoded) else np.zeros((0, len(split.classes)), np.float32)

    metrics = compute_metrics(decoded.labels, probabilities, split.classes)
    metrics["split"] = split_name
    metrics["classes"] = split.classes
    metrics["skipped"] = [issue.__dict__ for issue in decoded.skipped]
    metrics.update(error_analysis(decoded.paths, decoded.labels, probabilities, split.classes))
    metrics["calibration"], calibrated = _calibration_summary(run, probabilities, decoded.labels)
    from imgclf.calibration import coverage_curve

    metrics["coverage"] = coverage_curve(calibrated, decoded.labels)
    out = run / "evaluation"
    out.mkdir(exist_ok=True)
    write_json(out / f"{split_name}_metrics.json", metrics)
    write_json(out / f"{split_name}_confusion_matrix.json",
               {"classes": split.classes, "rows": "true class", "columns": "predicted class",
                "matrix": metrics["confusion_matrix"]})
    plot_confusion_matrix(metrics["confusion_matrix"], split.classes, out / f"{split_name}_confusion_matrix.png",
                          f"{run.name}\n{split_name} split, accuracy {metrics['accuracy']:.3f}")
    if (run / "tensorboard").is_dir():
        from imgclf.tensorboard_logs import write_confusion_image

        best_epoch = record.get("training", {}).get("best_epoch", 0)
        write_confusion_image(run, out / f"{split_name}_confusion_matrix.png", split_name, best_epoch)
    report_path = run / ("report.html" if split_name == "test" else f"report_{split_name}.html")
    _write_report(run, metrics, report_path)
    _track(config, run, metrics, split_name, [report_path, out / f"{split_name}_metrics.json"])
    reporter.message(f"evaluated {len(decoded)} {split_name} images; results in {out}, report in {report_path}")
    return metrics


def error_analysis(paths: list[str], labels: np.ndarray, probabilities: np.ndarray, classes: list[str]) -> dict:
    """The normalised confusion matrix, the most confused class pairs and the misclassified images by loss."""
    from sklearn.metrics import confusion_matrix

    indices = list(range(len(classes)))
    predicted = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, int)
    normalised = confusion_matrix(labels, predicted, labels=indices, normalize="true") if len(labels) else []
    counts = confusion_matrix(labels, predicted, labels=indices) if len(labels) else np.zeros((len(classes),) * 2, int)
    pairs = [
        {"true": classes[row], "predicted": classes[column], "count": int(counts[row, column])}
        for row in indices for column in indices if row != column and counts[row, column] > 0
    ]
    pairs.sort(key=lambda pair: (-pair["count"], pair["true"], pair["predicted"]))
    errors = []
    for index in np.flatnonzero(predicted != labels):
        true_probability = float(probabilities[index, labels[index]])
        errors.append({
            "path": paths[index],
            "true": classes[labels[index]],
            "predicted": classes[predicted[index]],
            "confidence": float(probabilities[index, predicted[index]]),
            "loss": float(-np.log(max(true_probability, 1e-12))),
        })
    errors.sort(key=lambda error: -error["loss"])
    return {
        "confusion_matrix_normalized": np.round(np.asarray(normalised, dtype=float), 4).tolist(),
        "most_confused": pairs[:10],
        "misclassified": errors,
    }


def _calibration_summary(run: Path, probabilities: np.ndarray, labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """ECE of the raw probabilities and, when training fitted a temperature, of the calibrated ones."""
    from imgclf.calibration import apply_temperature, reliability

    summary: dict = {"raw": reliability(probabilities, labels)}
    calibration_file = run / "calibration.json"
    if not calibration_file.is_file():
        return summary, probabilities
    temperature = float(read_json(calibration_file)["temperature"])
    calibrated = apply_temperature(probabilities, temperature)
    summary["temperature"] = temperature
    summary["calibrated"] = reliability(calibrated, labels)
    return summary, calibrated


def _track(config, run: Path, metrics: dict, split_name: str, files: list[Path]) -> None:
    """Add the evaluation to the run's MLflow run, when the run was tracked there."""
    from imgclf.tracking import MlflowRun

    tracker = MlflowRun.reopen(config.tracking.mlflow, run)
    if tracker is None:
        return
    figures = {key: value for key, value in metrics.items() if key in ("accuracy", "macro_f1", "macro_precision",
                                                                       "macro_recall", "top3_accuracy")}
    figures["ece"] = metrics["calibration"]["raw"]["ece"]
    tracker.log_metrics(figures, prefix=f"{split_name}_")
    tracker.log_files(files, folder="evaluation")


def _write_report(run: Path, metrics: dict, path: Path) -> None:
    from imgclf.report import render_report

    history_file = run / "history.json"
    history = read_json(history_file) if history_file.is_file() else []
    path.write_text(render_report(run.name, metrics, history), "utf-8")
