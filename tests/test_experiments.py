import json

import pytest
from typer.testing import CliRunner

from imgclf.cli.main import app
from imgclf.errors import ModelError
from imgclf.experiments import compare_runs, config_differences, list_runs, summarize_run

runner = CliRunner()


def _fake_run(root, name, created, val_accuracy, test_accuracy=None, epochs=3, learning_rate=0.001):
    run = root / name
    (run / "evaluation").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "created": created,
        "model": {"architecture": "small_cnn", "image_size": [32, 32]},
        "data": {"classes": ["a", "b"], "manifest_sha256": "ab" * 32},
        "training": {"epochs_run": epochs, "best_epoch": 2, "seconds": 12.5,
                     "best_metrics": {"val_accuracy": val_accuracy, "val_loss": 1 - val_accuracy},
                     "phases": [{"name": "scratch", "epochs_run": epochs, "seconds": 12.5, "learning_rate": learning_rate}]},
    }))
    (run / "config.yaml").write_text(f"seed: 1\ntrain:\n  epochs: {epochs}\n  learning_rate: {learning_rate}\n")
    if test_accuracy is not None:
        (run / "evaluation" / "test_metrics.json").write_text(json.dumps({"accuracy": test_accuracy, "macro_f1": 0.5}))
    return run


def test_list_runs_newest_first_and_sorted(tmp_path):
    _fake_run(tmp_path, "old", "2026-01-01T00:00:00", 0.9, test_accuracy=0.8)
    _fake_run(tmp_path, "new", "2026-02-01T00:00:00", 0.7)
    (tmp_path / "unfinished").mkdir()
    assert [run["name"] for run in list_runs(tmp_path)] == ["new", "old"]
    assert [run["name"] for run in list_runs(tmp_path, "val_accuracy")] == ["old", "new"]
    assert [run["name"] for run in list_runs(tmp_path, "val_loss")] == ["old", "new"]
    assert [run["name"] for run in list_runs(tmp_path, "test_accuracy")] == ["old", "new"]


def test_list_runs_rejects_unknown_sort_key(tmp_path):
    _fake_run(tmp_path, "one", "2026-01-01", 0.9)
    with pytest.raises(ModelError, match=r"--sort 'val_acc': not a run figure; choose one of .*val_accuracy"):
        list_runs(tmp_path, "val_acc")


def test_summarize_run_reads_evaluation(tmp_path):
    summary = summarize_run(_fake_run(tmp_path, "one", "2026-01-01", 0.9, test_accuracy=0.85))
    assert summary["test_accuracy"] == 0.85
    assert summary["val_accuracy"] == 0.9


def test_compare_runs_lists_differing_config_keys(tmp_path):
    first = _fake_run(tmp_path, "one", "2026-01-01", 0.9, epochs=3)
    second = _fake_run(tmp_path, "two", "2026-01-02", 0.8, epochs=5, learning_rate=0.01)
    comparison = compare_runs([first, second])
    assert comparison["config_differences"] == {"train.epochs": [3, 5], "train.learning_rate": [0.001, 0.01]}
    assert [run["val_accuracy"] for run in comparison["runs"]] == [0.9, 0.8]


def test_config_differences_handles_missing_sections():
    assert config_differences({"a": {"b": 1}}, {"a": {"b": 1}, "c": 2}) == [("c", None, 2)]


def test_runs_cli_list_show_compare(tmp_path):
    first = _fake_run(tmp_path, "one", "2026-01-01", 0.9)
    second = _fake_run(tmp_path, "two", "2026-01-02", 0.8, epochs=5)
    listed = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [run["name"] for run in json.loads(listed.stdout)] == ["two", "one"]
    shown = runner.invoke(app, ["runs", "show", str(first)])
    assert shown.exit_code == 0, shown.output
    assert "val_accuracy" in shown.output
    compared = runner.invoke(app, ["runs", "compare", str(first), str(second)])
    assert compared.exit_code == 0, compared.output
    assert "train.epochs" in compared.output


def test_runs_cli_missing_folder_exits_with_model_code(tmp_path):
    result = runner.invoke(app, ["runs", "list", "--runs-dir", str(tmp_path / "none")])
    assert result.exit_code == 6
    assert "runs folder not found" in result.output


def test_runs_tensorboard_prints_command(tmp_path):
    result = runner.invoke(app, ["runs", "tensorboard", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert f"tensorboard --logdir {tmp_path} --host 127.0.0.1 --port 6006" in result.stdout


@pytest.mark.slow
def test_tensorboard_logs_config_text_and_confusion_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import make_dataset, write_config

    root = make_dataset(tmp_path / "photos", per_class=6)
    config = write_config(tmp_path / "c.yaml", root, tmp_path / "runs", output={"name": "tb", "tensorboard": True})
    assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
    run = tmp_path / "runs" / "tb"
    assert runner.invoke(app, ["evaluate", str(run)]).exit_code == 0
    tags = {}
    for name in ("train", "config", "evaluation"):
        events = EventAccumulator(str(run / "tensorboard" / name), size_guidance={"tensors": 0})
        events.Reload()
        tags[name] = set(events.Tags()["tensors"])
    assert {"epoch_loss", "epoch_learning_rate"} <= tags["train"]
    assert "config" in tags["config"]
    assert "confusion_matrix/test" in tags["evaluation"]
