"""Evaluation report, calibration and the error analysis behind them."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_dataset, write_config
from imgclf.calibration import apply_temperature, coverage_curve, fit_temperature, reliability
from imgclf.cli.main import app
from imgclf.evaluation import error_analysis

runner = CliRunner()


def _overconfident(n=2000, seed=0):
    """Probabilities of a 3-class model that is right 70 % of the time but says 0.98."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + 1) % 3)
    probabilities = np.full((n, 3), 0.01)
    probabilities[np.arange(n), predicted] = 0.98
    return probabilities, labels


def test_reliability_of_overconfident_model():
    probabilities, labels = _overconfident()
    result = reliability(probabilities, labels)
    accuracy = float((probabilities.argmax(1) == labels).mean())
    assert result["ece"] == pytest.approx(0.98 - accuracy, abs=1e-6)
    assert sum(item["count"] for item in result["bins"]) == len(labels)


def test_temperature_scaling_lowers_ece_and_nll():
    probabilities, labels = _overconfident()
    fitted = fit_temperature(probabilities, labels)
    assert fitted["temperature"] > 1.0
    assert fitted["ece_after"] < fitted["ece_before"] / 4
    assert fitted["nll_after"] < fitted["nll_before"]


def test_apply_temperature_keeps_order_and_sums():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    scaled = apply_temperature(probabilities, 2.0)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, rtol=1e-6)
    assert (scaled.argmax(1) == probabilities.argmax(1)).all()
    assert scaled.max() < probabilities.max()


def test_coverage_curve_trades_coverage_for_accuracy():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    labels = np.array([0, 1, 0, 1])
    rows = {row["threshold"]: row for row in coverage_curve(probabilities, labels, [0.0, 0.58, 0.85])}
    assert rows[0.0] == {"threshold": 0.0, "coverage": 1.0, "accuracy": 0.75}
    assert rows[0.58]["coverage"] == 0.75
    assert rows[0.58]["accuracy"] == pytest.approx(2 / 3)
    assert rows[0.85] == {"threshold": 0.85, "coverage": 0.25, "accuracy": 1.0}


def test_error_analysis_sorts_misclassified_by_loss():
    probabilities = np.array([[0.9, 0.1], [0.3, 0.7], [0.05, 0.95], [0.2, 0.8]])
    labels = np.array([0, 0, 0, 1])
    analysis = error_analysis(["a", "b", "c", "d"], labels, probabilities, ["cat", "dog"])
    assert [error["path"] for error in analysis["misclassified"]] == ["c", "b"]
    assert analysis["misclassified"][0]["loss"] == pytest.approx(-np.log(0.05))
    assert analysis["most_confused"] == [{"true": "cat", "predicted": "dog", "count": 2}]
    assert analysis["confusion_matrix_normalized"] == [[0.3333, 0.6667], [0.0, 1.0]]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    root = make_dataset(tmp_path / "photos", per_class=10)
    config = write_config(tmp_path / "c.yaml", root, tmp_path / "runs", output={"name": "rep"}, train={"epochs": 2})
    assert runner.invoke(app, ["train", "--config", str(config)]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(tmp_path / "runs" / "rep"), "--json"])
    assert result.exit_code == 0, result.output
    return tmp_path / "runs" / "rep", json.loads(result.stdout)


@pytest.mark.slow
def test_training_writes_calibration(evaluated_run):
    run, _ = evaluated_run
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["temperature"] > 0
    assert calibration["fitted_on"] == "val"


@pytest.mark.slow
def test_evaluate_writes_self_contained_report(evaluated_run):
    run, metrics = evaluated_run
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert "Most confused pairs" in page
    assert "Expected calibration error" in page
    assert "src=\"http" not in page
    assert metrics["calibration"]["temperature"] > 0
    assert len(metrics["coverage"]) == 20


@pytest.mark.slow
def test_report_renders_in_headless_chromium(evaluated_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed")
    run, _ = evaluated_run
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (run / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert "Per-class metrics" in dom.stdout
    screenshot = tmp_path / "report.png"
    subprocess.run([browser, *flags, "--window-size=1200,2400", f"--screenshot={screenshot}", url],
                   capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10  # text, tables and plots drawn, not a blank page


@pytest.mark.slow
def test_predict_reports_calibrated_probabilities_and_unknown(evaluated_run):
    from imgclf.calibration import apply_temperature
    from imgclf.prediction import Predictor

    run, _ = evaluated_run
    image = json.loads((run / "run.json").read_text())["data"]["split_folder"]
    first = (Path(image) / "test.csv").read_text().splitlines()[1].split(",")[0]
    predictor = Predictor.load(run)
    temperature = json.loads((run / "calibration.json").read_text())["temperature"]
    assert predictor.temperature == pytest.approx(temperature)
    result = predictor.predict([first])[0]
    from imgclf.imageio import load_image

    raw = predictor.predict_arrays(load_image(first, predictor.image_size)[None])[0]
    np.testing.assert_allclose(result.probabilities, apply_temperature(raw[None].astype(np.float64), temperature)[0], rtol=1e-5)
    predictor.unknown_threshold = 1.01
    unsure = predictor.predict([first])[0]
    assert unsure.label == "unknown"
    assert unsure.best_guess == result.label
    assert unsure.to_json()["best_guess"] == result.label
    cli = runner.invoke(app, ["predict", str(run), first, "--json", "--unknown-threshold", "1.0", "--raw"])
    assert cli.exit_code == 0, cli.output
    line = json.loads(cli.stdout.strip().splitlines()[-1])
    assert line["confidence"] == pytest.approx(float(raw.max()), rel=1e-5)
