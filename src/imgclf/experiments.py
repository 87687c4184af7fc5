"""Reading run directories back: list, show and compare past training runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import yaml

from imgclf.errors import ModelError

RUN_FILE = "run.json"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def summarize_run(run_dir: str | os.PathLike) -> dict:
    """One run's headline figures: model, data, best validation metrics and evaluation results.

    Raises:
        ModelError: when `run_dir` has no readable run.json.
    """
    run = Path(run_dir)
    record = _read_json(run / RUN_FILE)
    if record is None:
        raise ModelError(f"{run_dir}: not a finished run directory (no readable {RUN_FILE})")
    training = record.get("training", {})
    best = training.get("best_metrics", {})
    summary = {
        "run": str(run),
        "name": run.name,
        "created": record.get("created"),
        "model": record.get("model", {}).get("architecture") or record.get("model", {}).get("name"),
        "backbone": record.get("model", {}).get("backbone"),
        "image_size": record.get("model", {}).get("image_size"),
        "classes": len(record.get("data", {}).get("classes", [])),
        "manifest_sha256": record.get("data", {}).get("manifest_sha256"),
        "epochs_run": training.get("epochs_run"),
        "best_epoch": training.get("best_epoch"),
        "seconds": training.get("seconds"),
        "val_accuracy": best.get("val_accuracy"),
        "val_loss": best.get("val_loss"),
    }
    for split in ("test", "val"):
        metrics = _read_json(run / "evaluation" / f"{split}_metrics.json")
        if metrics is not None:
            summary[f"{split}_accuracy"] = metrics.get("accuracy")
            summary[f"{split}_macro_f1"] = metrics.get("macro_f1")
    return summary


def list_runs(runs_dir: str | os.PathLike, sort: Optional[str] = None) -> list[dict]:
    """Summaries of every run directory under `runs_dir`, newest first or sorted by a metric (best first).

    Runs without the metric sort last. Folders without run.json (interrupted before the end) are skipped.
    """
    base = Path(runs_dir)
    if not base.is_dir():
        raise ModelError(f"{runs_dir}: runs folder not found; train a model first or pass --runs-dir")
    runs = [summarize_run(child) for child in sorted(base.iterdir()) if (child / RUN_FILE).is_file()]
    if sort is None:
        return sorted(runs, key=lambda run: run.get("created") or "", reverse=True)
    known = sorted({key for run in runs for key, value in run.items() if isinstance(value, (int, float))})
    if runs and sort not in known:
        raise ModelError(f"--sort {sort!r}: not a run figure; choose one of {', '.join(known)}")
    lower_is_better = sort.endswith("loss") or sort == "seconds"
    with_value = [run for run in runs if isinstance(run.get(sort), (int, float))]
    without = [run for run in runs if not isinstance(run.get(sort), (int, float))]
    return sorted(with_value, key=lambda run: run[sort], reverse=not lower_is_better) + without


def show_run(run_dir: str | os.PathLike) -> dict:
    """Everything recorded about one run: the summary, run.json, the config and evaluation metrics."""
    run = Path(run_dir)
    details = {"summary": summarize_run(run), "record": _read_json(run / RUN_FILE)}
    config_path = run / "config.yaml"
    details["config"] = yaml.safe_load(config_path.read_text("utf-8")) if config_path.is_file() else None
    details["evaluation"] = {
        path.stem.removesuffix("_metrics"): _read_json(path)
        for path in sorted((run / "evaluation").glob("*_metrics.json"))
    }
    return details


def config_differences(first: dict, second: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """Dotted keys whose values differ between two config mappings, as (key, first value, second value)."""
    found = []
    for key in sorted(set(first) | set(second)):
        dotted = f"{prefix}{key}"
        if isinstance(first.get(key), dict) and isinstance(second.get(key), dict):
            found.extend(config_differences(first[key], second[key], dotted + "."))
        elif first.get(key) != second.get(key):
            found.append((dotted, first.get(key), second.get(key)))
    return found


def compare_runs(run_dirs: list[str | os.PathLike]) -> dict:
    """Metrics side by side, and the config keys whose values are not the same in every run."""
    if len(run_dirs) < 2:
        raise ModelError("give at least two run directories to compare")
    details = [show_run(run) for run in run_dirs]
    configs = [detail["config"] or {} for detail in details]
    differing: dict[str, list] = {}
    for other in configs[1:]:
        for key, _, _ in config_differences(configs[0], other):
            differing.setdefault(key, [])
    for key in sorted(differing):
        differing[key] = [_lookup(config, key) for config in configs]
    return {"runs": [detail["summary"] for detail in details], "config_differences": differing}


def _lookup(config: dict, dotted: str):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
