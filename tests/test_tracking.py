"""MLflow tracking against a SQLite store the test creates; nothing leaves this machine."""

import json

import pytest
from typer.testing import CliRunner

from conftest import make_dataset, write_config
from imgclf.cli.main import app
from imgclf.tracking import flatten

runner = CliRunner()
mlflow = pytest.importorskip("mlflow")


def test_flatten_gives_dotted_string_params():
    assert flatten({"a": {"b": 1, "c": [2, 3]}, "d": None}) == {"a.b": "1", "a.c": "[2, 3]", "d": "None"}


@pytest.mark.slow
def test_training_and_evaluation_log_to_mlflow(tmp_path):
    database = tmp_path / "mlflow.db"
    root = make_dataset(tmp_path / "photos", per_class=6)
    config = write_config(
        tmp_path / "c.yaml", root, tmp_path / "runs", output={"name": "tracked"}, train={"epochs": 2},
        tracking={"mlflow": {"tracking_uri": f"sqlite:///{database}", "experiment": "tests", "run_name": "tiny"}},
    )
    assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
    run_dir = tmp_path / "runs" / "tracked"
    assert runner.invoke(app, ["evaluate", str(run_dir)]).exit_code == 0
    exported = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "bundle")])
    assert exported.exit_code == 0, exported.output

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}")
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    record = json.loads((run_dir / "run.json").read_text())
    assert run.info.run_name == "tiny"
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.tags["imgclf.data_manifest_sha256"] == record["data"]["manifest_sha256"]
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2]
    assert "test_accuracy" in run.data.metrics
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"model.keras", "run.json", "evaluation", "bundle"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir()


def test_missing_mlflow_names_the_extra(tmp_path, monkeypatch):
    import builtins

    from imgclf.config import MlflowConfig
    from imgclf.errors import ConfigError
    from imgclf.tracking import MlflowRun

    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name == "mlflow":
            raise ImportError("no mlflow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(ConfigError, match=r"pip install 'imgclf\[mlflow\]'"):
        MlflowRun(MlflowConfig(tracking_uri="sqlite:///x.db"), tmp_path)
