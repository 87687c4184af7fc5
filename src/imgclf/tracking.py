"""Experiment tracking in MLflow, an optional extra (`pip install imgclf[mlflow]`).

A run with a `tracking.mlflow` config section logs its flattened config as parameters, every
epoch's metrics, the data-manifest hash as a tag, and its record files and model as artifacts.
`imgclf evaluate` adds the evaluation metrics and the HTML report to the same MLflow run, and
`imgclf export` adds the bundle. The MLflow run id is kept in the run directory's
`mlflow_run_id` file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from imgclf.config import MlflowConfig, RunConfig
from imgclf.errors import ConfigError

MLFLOW_ID_FILE = "mlflow_run_id"


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "tracking.mlflow is set, but MLflow is not installed; run `pip install 'imgclf[mlflow]'` "
            "or remove the tracking section"
        ) from None
    return mlflow


def flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
    """Dotted keys to string values, as MLflow parameters need."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def _artifact_location(settings: MlflowConfig) -> Optional[str]:
    if settings.artifact_location:
        return settings.artifact_location
    if settings.tracking_uri.startswith("sqlite:///"):
        database = Path(settings.tracking_uri.removeprefix("sqlite:///"))
        return (database.parent.resolve() / "mlartifacts").as_uri()
    return None


class MlflowRun:
    """One MLflow run tied to one imgclf run directory."""

    def __init__(self, settings: MlflowConfig, run_dir: Path, run_id: Optional[str] = None):
        self.mlflow = _mlflow()
        self.client = self.mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
        self.run_dir = run_dir
        if run_id is None:
            experiment = self.client.get_experiment_by_name(settings.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                settings.experiment, artifact_location=_artifact_location(settings))
            run = self.client.create_run(experiment_id, run_name=settings.run_name or run_dir.name)
            run_id = run.info.run_id
            (run_dir / MLFLOW_ID_FILE).write_text(run_id + "\n", "utf-8")
        self.run_id = run_id

    @classmethod
    def reopen(cls, settings: Optional[MlflowConfig], run_dir: Path) -> Optional["MlflowRun"]:
        """The MLflow run a run directory logged to, or None when it does not track to MLflow."""
        id_file = run_dir / MLFLOW_ID_FILE
        if settings is None or not id_file.is_file():
            return None
        return cls(settings, run_dir, id_file.read_text("utf-8").strip())

    def log_config(self, config: RunConfig, manifest_sha256: str) -> None:
        params = flatten(config.to_dict())
        params.pop("tracking.mlflow.tracking_uri", None)
        for start in range(0, len(params), 100):
            batch = dict(list(params.items())[start:start + 100])
            for key, value in batch.items():
                self.client.log_param(self.run_id, key, value[:6000])
        self.client.set_tag(self.run_id, "imgclf.data_manifest_sha256", manifest_sha256)
        self.client.set_tag(self.run_id, "imgclf.run_dir", str(self.run_dir.resolve()))

    def log_metrics(self, metrics: dict, step: Optional[int] = None, prefix: str = "") -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.client.log_metric(self.run_id, prefix + key, float(value), step=step or 0)

    def log_files(self, paths: list[Path], folder: Optional[str] = None) -> None:
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=folder or path.name)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
