"""Interrupting training with a signal, and resuming it from the checkpoint."""

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from conftest import make_dataset, write_config
from imgclf.cli.main import app
from imgclf.config import load_config
from imgclf.errors import TrainingError, TrainingInterrupted
from imgclf.progress import Reporter

runner = CliRunner()
pytestmark = pytest.mark.slow


class SignalAfterEpoch(Reporter):
    """Sends this process SIGTERM once the given epoch has been reported, as `kill` would."""

    def __init__(self, epoch: int, total: int):
        self.marker = f"epoch {epoch}/{total}"

    def message(self, text: str) -> None:
        if text.startswith(self.marker + ":"):
            os.kill(os.getpid(), signal.SIGTERM)


def _config(tmp_path, name, **train):
    root = tmp_path / "photos"
    if not root.exists():
        make_dataset(root, per_class=8)
    settings = {"epochs": 4, "lr_schedule": "cosine", "learning_rate": 0.01}
    settings.update(train)
    path = write_config(tmp_path / f"{name}.yaml", root, tmp_path / "runs", output={"name": name}, train=settings)
    return load_config(path)


@pytest.fixture
def interrupted(tmp_path):
    from imgclf.training import train

    with pytest.raises(TrainingInterrupted, match=r"stopped after epoch 2; .*imgclf train --resume"):
        train(_config(tmp_path, "cut"), SignalAfterEpoch(2, 4))
    return tmp_path / "runs" / "cut"


def test_signal_stops_after_epoch_with_checkpoint(interrupted):
    state = json.loads((interrupted / "checkpoint" / "state.json").read_text())
    assert state["completed_epoch"] == 2
    assert state["phase_in_progress"] == 0
    assert (interrupted / "checkpoint" / "fitted.weights.h5").is_file()
    assert (interrupted / "model.keras").is_file()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_resume_matches_uninterrupted_run(tmp_path, interrupted):
    from imgclf.training import resume, train

    resumed = resume(interrupted)
    whole = train(_config(tmp_path, "whole"))
    cut_history = json.loads((interrupted / "history.json").read_text())
    whole_history = json.loads((whole.run_dir / "history.json").read_text())
    assert [row["epoch"] for row in cut_history] == [1, 2, 3, 4]
    assert cut_history[:2] == whole_history[:2]
    # The optimizer's step count comes back, so the cosine schedule continues where it stopped.
    assert cut_history[2]["learning_rate"] == pytest.approx(whole_history[2]["learning_rate"], rel=1e-6)
    assert cut_history[3]["val_loss"] == pytest.approx(whole_history[3]["val_loss"], abs=0.25)
    assert resumed.epochs_run == 4
    assert not (interrupted / "checkpoint" / "fitted.weights.h5").exists()


def test_resume_rejects_changed_config(tmp_path, interrupted):
    from imgclf.training import resume

    changed = _config(tmp_path, "cut", learning_rate=0.02)
    with pytest.raises(TrainingError, match=r"config changed .*train\.learning_rate: 0\.01 in the run, 0\.02 now"):
        resume(interrupted, config=changed)


def test_resume_rejects_changed_manifest(interrupted):
    from imgclf.training import resume

    manifest = interrupted / "split" / "train.csv"
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(TrainingError, match=r"data manifest changed since the run started"):
        resume(interrupted)


def test_resume_of_finished_run_is_rejected(interrupted):
    from imgclf.training import resume

    resume(interrupted)
    with pytest.raises(TrainingError, match=r"finished all its epochs"):
        resume(interrupted)


def test_cli_resume_continues_run(interrupted):
    result = runner.invoke(app, ["train", "--resume", str(interrupted)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(interrupted)


def test_cli_train_without_config_or_resume_fails():
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 3
    assert "give --config FILE to start a run, or --resume RUN" in result.output
