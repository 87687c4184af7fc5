"""`imgclf serve`: the HTTP API, its limits and errors, micro-batching, and a real uvicorn process.

Most tests run the app in process through Starlette's TestClient, on a stub runtime that turns
an image's mean colour into probabilities, so they need no TensorFlow and take milliseconds.
Tests of parity with `imgclf predict` and of the TFLite-only import path use a real tiny bundle
(`tiny_bundle`). The last section starts `imgclf serve` as a process for what only a real server
shows: the first request after start-up, the load test, and graceful shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="imgclf serve needs the serve extra: pip install 'imgclf[serve]'")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from conftest import make_image, shared_path  # noqa: E402
from imgclf.cli.main import app as cli_app  # noqa: E402
from imgclf.errors import ConfigError  # noqa: E402
from imgclf.prediction import Predictor  # noqa: E402
from imgclf.runtimes import Runtime  # noqa: E402
from imgclf.serving import ServeConfig, ServedModel, create_app, load_serve_config  # noqa: E402
from imgclf.serving import schemas  # noqa: E402
from imgclf.serving.batching import MicroBatcher  # noqa: E402
from imgclf.serving.model import ModelInfo  # noqa: E402
from robustness_corpus import Corpus, corpus  # noqa: E402,F401  (`corpus` is a fixture)

runner = CliRunner()
STUB_CLASSES = ["blue", "green", "red"]
STUB_SIZE = (8, 8)
RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)


# --------------------------------------------------------------------------------------------
# Models: a stub runtime for the API tests, and a real tiny bundle for parity and processes
# --------------------------------------------------------------------------------------------


class ColourRuntime(Runtime):
    """Probabilities from an image's mean blue, green and red, so each test image has a known class.

    `delay_s` makes every call slow, and `error` makes every call raise it.
    """

    name = "stub"
    n_classes = 3
    input_size = STUB_SIZE

    def __init__(self, delay_s: float = 0.0, error: Optional[Exception] = None):
        self.delay_s = delay_s
        self.error = error
        self.batch_sizes: list[int] = []

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(images))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        means = images.mean(axis=(1, 2))[:, ::-1] / 255.0  # RGB to the class order blue, green, red
        scores = np.exp(8 * means)
        return (scores / scores.sum(axis=1, keepdims=True)).astype(np.float32)


def stub_model(runtime: Optional[ColourRuntime] = None, max_pixels: int = 10_000_000) -> ServedModel:
    runtime = runtime or ColourRuntime()
    predictor = Predictor(runtime, STUB_CLASSES, STUB_SIZE, max_pixels=max_pixels, source="stub")
    info = ModelInfo(name="stub", version="0123456789ab", runtime="stub", model_file="stub",
                     classes=STUB_CLASSES, image_size=STUB_SIZE, metrics={"test": {"accuracy": 0.5}})
    return ServedModel(predictor, info)


def png_bytes(rgb=RED, size=(24, 24), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes(rgb=RED, size=(32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class LogCapture(logging.Handler):
    """Records of the `imgclf.serve` logger, caught on that logger itself.

    The CLI's `setup_logging` stops `imgclf` records from reaching the root logger, where
    pytest's caplog listens, once any CLI test has run in the session.
    """

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> "LogCapture":
        logger = logging.getLogger("imgclf.serve")
        self._level = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc_info) -> None:
        logger = logging.getLogger("imgclf.serve")
        logger.removeHandler(self)
        logger.setLevel(self._level)


def wait_ready(client: TestClient, seconds: float = 30.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return response.json()
        time.sleep(0.02)
    raise AssertionError(f"/ready still answers {response.status_code} {response.text}")


@pytest.fixture
def serve_client():
    """Make a started TestClient for a model (default: the stub) and settings; close it after the test."""
    clients = []

    def start(model=None, api_key: Optional[str] = None, **settings) -> TestClient:
        app = create_app(model if model is not None else stub_model(), ServeConfig(**settings), api_key=api_key)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run directory, bundle with model.keras and model.tflite), made once per test session.

    They are kept in the session's base temporary folder, so the browser tests reuse them.
    """
    root = tmp_path_factory.getbasetemp() / "serve_tiny"
    run, bundle = root / "runs" / "tiny", root / "bundle"
    if not (bundle / "imgclf.json").is_file():
        from imgclf.export import ExportOptions, export_bundle
        from tiny_run import make_run

        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("IMGCLF_CACHE_DIR", str(root / "cache"))
            run = make_run(root)
            export_bundle(run, bundle, ExportOptions(formats=["keras", "tflite"], name="tiny"))
    return run, bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return tiny_bundle(tmp_path_factory)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def test_config_defaults_are_safe():
    config = ServeConfig()
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.max_upload_bytes == 10_000_000
    assert config.max_latency_ms == 0


def test_config_file_unknown_key_suggests_nearest(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("max_upload_mbs: 5\n", "utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'max_upload_mbs'; did you mean 'max_upload_mb'\?"):
        load_serve_config(path)


def test_config_file_rejects_api_key(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("api_key: secret\n", "utf-8")
    with pytest.raises(ConfigError, match="--api-key or IMGCLF_API_KEY"):
        load_serve_config(path)


def test_config_invalid_value_names_key_and_value(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("max_batch_size: 0\n", "utf-8")
    with pytest.raises(ConfigError, match=r"max_batch_size = 0 is invalid"):
        load_serve_config(path)


def test_config_options_override_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("port: 9000\nmax_batch_size: 4\n", "utf-8")
    config = load_serve_config(path, {"port": 9100, "max_batch_size": None})
    assert config.port == 9100
    assert config.max_batch_size == 4


# --------------------------------------------------------------------------------------------
# Health, readiness, metadata, page, docs
# --------------------------------------------------------------------------------------------


def test_ready_waits_for_warm_up(monkeypatch):
    release = threading.Event()
    original = ServedModel.warm_up

    def slow_warm_up(self, batch_sizes=(1,)):
        release.wait(10)
        return original(self, batch_sizes)

    monkeypatch.setattr(ServedModel, "warm_up", slow_warm_up)
    with TestClient(create_app(stub_model(), ServeConfig())) as client:
        assert client.get("/health").status_code == 200
        loading = client.get("/ready")
        assert loading.status_code == 503
        assert loading.json()["status"] == "loading"
        early = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
        assert early.status_code == 503
        assert early.json()["reason"] == "not_ready"
        assert early.headers["retry-after"] == "1"
        release.set()
        assert wait_ready(client)["model"] == {"name": "stub", "version": "0123456789ab"}


def test_ready_reports_load_failure(tmp_path):
    with TestClient(create_app(tmp_path / "missing", ServeConfig())) as client:
        deadline = time.monotonic() + 10
        while client.get("/ready").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = client.get("/ready")
        assert answer.status_code == 503
        assert answer.json()["status"] == "failed"
        assert "model not found" in answer.json()["error"]


def test_metadata_describes_bundle(serve_client, tiny):
    run, bundle = tiny
    metadata = serve_client(bundle).get("/metadata").json()
    assert metadata["classes"] == ["cat", "dog", "fish"]
    assert metadata["input"]["height"] == 16
    assert metadata["input"]["width"] == 16
    assert metadata["runtime"] == "tflite"
    assert metadata["name"] == "tiny"
    assert len(metadata["version"]) == 12
    assert metadata["metrics"]["test"]["accuracy"] == pytest.approx(1.0)
    assert metadata["limits"]["max_upload_mb"] == 10


def test_metadata_describes_run_directory(serve_client, tiny):
    run, _ = tiny
    metadata = serve_client(run).get("/metadata").json()
    assert metadata["runtime"] == "keras"
    assert metadata["name"] == "tiny"
    assert "accuracy" in metadata["metrics"]["test"]


def test_page_is_self_contained(serve_client):
    page = serve_client().get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="file-input"' in page.text
    assert 'id="drop-zone"' in page.text
    assert "src=\"http" not in page.text and "href=\"http" not in page.text


def test_openapi_documents_both_request_bodies(serve_client):
    client = serve_client()
    assert client.get("/docs").status_code == 200
    document = client.get("/openapi.json").json()
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert "/predict/batch" in document["paths"]


# --------------------------------------------------------------------------------------------
# POST /predict and /predict/batch
# --------------------------------------------------------------------------------------------


def test_predict_answers_classic_contract_and_more(serve_client):
    answer = serve_client().post("/predict", files={"file": ("red.png", png_bytes(RED), "image/png")})
    assert answer.status_code == 200
    body = answer.json()
    assert body["class"] == "red"
    assert type(body["class"]) is str
    assert type(body["confidence"]) is float
    assert 0 <= body["confidence"] <= 1
    assert [item["class"] for item in body["top_k"]][0] == "red"
    assert body["model"] == {"name": "stub", "version": "0123456789ab"}
    assert body["request_id"] == answer.headers["x-request-id"]
    schemas.PredictResponse.model_validate(body)


def test_predict_top_k_sets_count(serve_client):
    client = serve_client(top_k=2)
    files = {"file": ("red.png", png_bytes(RED), "image/png")}
    assert len(client.post("/predict", files=files).json()["top_k"]) == 2
    assert len(client.post("/predict?top_k=1", files=files).json()["top_k"]) == 1
    assert len(client.post("/predict?top_k=50", files=files).json()["top_k"]) == 3


@pytest.mark.parametrize("value", ["0", "abc", "-2"])
def test_predict_invalid_top_k_names_value(serve_client, value):
    answer = serve_client().post(f"/predict?top_k={value}", files={"file": ("red.png", png_bytes(), "image/png")})
    assert answer.status_code == 400
    assert f"top_k = '{value}'" in answer.json()["error"]


def test_predict_json_base64_matches_multipart(serve_client):
    client = serve_client()
    data = jpeg_bytes(GREEN)
    multipart = client.post("/predict", files={"file": ("g.jpg", data, "image/jpeg")}).json()
    encoded = base64.b64encode(data).decode()
    plain = client.post("/predict", json={"b64": encoded}).json()
    data_url = client.post("/predict", json={"b64": "data:image/jpeg;base64," + encoded}).json()
    assert plain["top_k"] == multipart["top_k"]
    assert data_url["top_k"] == multipart["top_k"]


def test_predict_json_invalid_base64(serve_client):
    answer = serve_client().post("/predict", json={"b64": "not base64!"})
    assert answer.status_code == 400
    assert answer.json()["reason"] == "invalid_base64"


def test_predict_json_missing_key_lists_keys(serve_client):
    answer = serve_client().post("/predict", json={"image": "abc"})
    assert answer.status_code == 400
    assert answer.json()["fields_received"] == ["image"]


def test_batch_answers_in_order_with_per_file_errors(serve_client):
    files = [("files", ("r.png", png_bytes(RED), "image/png")),
             ("files", ("notes.txt", b"hello", "text/plain")),
             ("files", ("g.jpg", jpeg_bytes(GREEN), "image/jpeg")),
             ("files", ("b.png", png_bytes(BLUE), "image/png"))]
    answer = serve_client().post("/predict/batch?top_k=1", files=files)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [item["file"] for item in results] == ["r.png", "notes.txt", "g.jpg", "b.png"]
    assert [item.get("class") for item in results] == ["red", None, "green", "blue"]
    assert results[1]["reason"] == "not_an_image"
    assert results[1]["status"] == 400
    schemas.BatchResponse.model_validate(answer.json())


def test_batch_json_images(serve_client):
    images = [{"b64": base64.b64encode(png_bytes(colour)).decode(), "name": name}
              for name, colour in (("first", BLUE), ("second", RED))]
    results = serve_client().post("/predict/batch", json={"images": images}).json()["results"]
    assert [(item["file"], item["class"]) for item in results] == [("first", "blue"), ("second", "red")]


def test_batch_over_file_limit_is_413(serve_client):
    files = [("files", (f"{i}.png", png_bytes(), "image/png")) for i in range(4)]
    answer = serve_client(max_batch_files=3).post("/predict/batch", files=files)
    assert answer.status_code == 413
    assert "limit of 3" in answer.json()["error"]


def test_batch_images_share_model_calls(serve_client):
    runtime = ColourRuntime()
    files = [("files", (f"{i}.png", png_bytes(RED), "image/png")) for i in range(6)]
    client = serve_client(stub_model(runtime), max_batch_size=8)
    runtime.batch_sizes.clear()
    assert client.post("/predict/batch", files=files).status_code == 200
    assert sum(runtime.batch_sizes) == 6
    assert len(runtime.batch_sizes) < 6


# --------------------------------------------------------------------------------------------
# Errors: every one is JSON with a reason and the request id
# --------------------------------------------------------------------------------------------


def test_missing_file_field_lists_fields(serve_client):
    answer = serve_client().post("/predict", files={"image": ("a.png", png_bytes(), "image/png")},
                                 data={"note": "x"})
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"].startswith("missing multipart field 'file'")
    assert body["fields_received"] == ["image", "note"]
    assert body["request_id"]


def test_empty_request_is_400(serve_client):
    answer = serve_client().post("/predict")
    assert answer.status_code == 400
    assert answer.json()["fields_received"] == []


@pytest.mark.parametrize("content_type", ["image/jpeg", "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_415(serve_client, content_type):
    answer = serve_client().post("/predict", content=jpeg_bytes(), headers={"content-type": content_type})
    assert answer.status_code == 415
    assert "multipart/form-data with the image in field 'file'" in answer.json()["error"]


def test_text_field_instead_of_file_is_400(serve_client):
    answer = serve_client().post("/predict", data={"file": "just text"},
                                 files={"other": ("a.png", png_bytes(), "image/png")})
    assert answer.status_code == 400
    assert answer.json()["reason"] == "not_a_file"


@pytest.mark.parametrize("name, data, reason", [
    ("empty.jpg", b"", "empty"),
    ("notes.txt", b"plain text, no image", "not_an_image"),
    ("cut.png", png_bytes(size=(64, 64))[:60], "truncated|corrupt"),
])
def test_undecodable_upload_is_400_naming_problem(serve_client, name, data, reason):
    answer = serve_client().post("/predict", files={"file": (name, data, "image/png")})
    assert answer.status_code == 400
    body = answer.json()
    assert body["reason"] in reason.split("|")
    assert name in body["error"]


def test_image_over_pixel_limit_is_413(serve_client):
    client = serve_client(stub_model(max_pixels=1000))
    answer = client.post("/predict", files={"file": ("big.png", png_bytes(size=(40, 40)), "image/png")})
    assert answer.status_code == 413
    assert answer.json()["reason"] == "too_many_pixels"
    assert "over the limit of 1,000 (max_image_pixels)" in answer.json()["error"]


def test_body_over_upload_limit_is_413_naming_limit(serve_client):
    answer = serve_client(max_upload_mb=0.001).post(
        "/predict", files={"file": ("big.bin", b"x" * 5000, "image/png")})
    assert answer.status_code == 413
    assert "limit of 0.001 MB (max_upload_mb)" in answer.json()["error"]


def test_streamed_body_over_upload_limit_is_413(serve_client):
    def chunks():
        for _ in range(10):
            yield b"y" * 1000

    answer = serve_client(max_upload_mb=0.002).post(
        "/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=abc"})
    assert answer.status_code == 413
    assert answer.json()["reason"] == "body_too_large"


def test_unexpected_error_is_500_without_its_text(serve_client):
    runtime = ColourRuntime()
    client = serve_client(stub_model(runtime))
    runtime.error = RuntimeError("secret detail of the failure")
    with LogCapture() as caplog:
        answer = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert answer.status_code == 500
    body = answer.json()
    assert "secret" not in answer.text
    assert body["request_id"] == answer.headers["x-request-id"]
    failures = [record for record in caplog.records if record.exc_info]
    assert failures and body["request_id"] in failures[0].getMessage()
    assert "secret detail" in str(failures[0].exc_info[1])


def test_unknown_route_is_json_404(serve_client):
    answer = serve_client().get("/nowhere")
    assert answer.status_code == 404
    assert answer.json()["reason"] == "not_found"


def test_request_timeout_is_504(serve_client):
    client = serve_client(stub_model(ColourRuntime(delay_s=0.5)), request_timeout_s=0.1)
    answer = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert answer.status_code == 504
    assert "timed out after 0.1 s" in answer.json()["error"]


def test_full_queue_is_503(serve_client):
    client = serve_client(stub_model(ColourRuntime(delay_s=0.4)), max_queue_size=2, max_batch_size=1)

    def post(_):
        return client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")}).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(post, range(6)))
    assert statuses.count(200) >= 2
    assert statuses.count(503) >= 1
    assert set(statuses) <= {200, 503}


# --------------------------------------------------------------------------------------------
# API key, CORS, request ids, logs, metrics
# --------------------------------------------------------------------------------------------


def test_api_key_required_when_set(serve_client):
    client = serve_client(api_key="k3y")
    files = {"file": ("a.png", png_bytes(), "image/png")}
    assert client.post("/predict", files=files).status_code == 401
    assert client.post("/predict", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/metadata").status_code == 401
    assert client.post("/predict", files=files, headers={"X-API-Key": "k3y"}).status_code == 200
    assert client.post("/predict", files=files, headers={"Authorization": "Bearer k3y"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_api_key_answer_is_json_401(serve_client):
    answer = serve_client(api_key="k3y").post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    assert answer.json()["reason"] == "unauthorized"
    assert "X-API-Key" in answer.json()["error"]


def test_cors_allows_configured_origin_only(serve_client):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    allowed = serve_client(cors_origins=["http://app.example"]).options("/predict", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    closed = serve_client().post("/predict", headers={"Origin": "http://app.example"},
                                 files={"file": ("a.png", png_bytes(), "image/png")})
    assert "access-control-allow-origin" not in closed.headers


def test_request_id_from_client_is_kept(serve_client):
    client = serve_client()
    kept = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert replaced.headers["x-request-id"] != "bad id with spaces"


def test_log_has_one_line_per_request(serve_client):
    client = serve_client()
    with LogCapture() as caplog:
        ok = client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
        bad = client.post("/predict", files={"file": ("a.txt", b"text", "text/plain")})
    lines = [record.getMessage() for record in caplog.records if "path=/predict" in record.getMessage()]
    assert len(lines) == 2
    assert f"request_id={ok.headers['x-request-id']}" in lines[0]
    assert "status=200" in lines[0]
    assert "latency_ms=" in lines[0]
    assert "status=400" in lines[1]
    assert "reason=not_an_image" in lines[1]
    assert bad.headers["x-request-id"] in lines[1]


def test_metrics_count_requests_batches_and_load(serve_client):
    client = serve_client()
    client.post("/predict", files={"file": ("a.png", png_bytes(), "image/png")})
    client.post("/predict", files={"file": ("a.txt", b"text", "text/plain")})
    text = client.get("/metrics").text
    assert 'imgclf_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'imgclf_requests_total{method="POST",route="/predict",status="400"} 1.0' in text
    assert 'imgclf_request_latency_seconds_count{route="/predict"} 2.0' in text
    assert "imgclf_batch_size_count" in text
    assert 'imgclf_images_total{outcome="not_an_image"} 1.0' in text
    assert "imgclf_model_load_seconds" in text


# --------------------------------------------------------------------------------------------
# Micro-batching
# --------------------------------------------------------------------------------------------


def test_batcher_groups_concurrent_images():
    sizes = []

    def predict(batch):
        sizes.append(len(batch))
        time.sleep(0.05)
        return batch.reshape(len(batch), -1)[:, :1].astype(np.float32)

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=4, max_latency_ms=0)
        batcher.start()
        rows = await asyncio.gather(*(batcher.predict(np.full((2, 2, 3), i, np.uint8)) for i in range(9)))
        await batcher.stop()
        return rows

    rows = asyncio.run(scenario())
    assert [float(row[0]) for row in rows] == list(range(9))
    assert max(sizes) == 4
    assert sum(sizes) == 9


def test_batcher_without_latency_never_waits():
    async def scenario():
        batcher = MicroBatcher(lambda batch: np.zeros((len(batch), 1)), max_batch_size=8, max_latency_ms=0)
        batcher.start()
        started = time.perf_counter()
        await batcher.predict(np.zeros((2, 2, 3), np.uint8))
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    assert asyncio.run(scenario()) < 0.05


def test_batcher_latency_window_joins_late_arrivals():
    sizes = []

    async def scenario():
        batcher = MicroBatcher(lambda batch: sizes.append(len(batch)) or np.zeros((len(batch), 1)),
                               max_batch_size=8, max_latency_ms=200)
        batcher.start()
        first = asyncio.ensure_future(batcher.predict(np.zeros((2, 2, 3), np.uint8)))
        await asyncio.sleep(0.02)
        await batcher.predict(np.zeros((2, 2, 3), np.uint8))
        await first
        await batcher.stop()

    asyncio.run(scenario())
    assert sizes == [2]


def test_batcher_error_reaches_every_waiter():
    def predict(batch):
        raise ValueError("model failed")

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=4)
        batcher.start()
        results = await asyncio.gather(*(batcher.predict(np.zeros((2, 2, 3), np.uint8)) for _ in range(3)),
                                       return_exceptions=True)
        await batcher.stop()
        return results

    assert all(isinstance(result, ValueError) for result in asyncio.run(scenario()))


def test_batcher_stop_finishes_queued_images():
    async def scenario():
        batcher = MicroBatcher(lambda batch: time.sleep(0.02) or np.ones((len(batch), 1)), max_batch_size=2)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.predict(np.zeros((2, 2, 3), np.uint8))) for _ in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [task.result()[0] for task in pending]

    assert asyncio.run(scenario()) == [1.0] * 5


# --------------------------------------------------------------------------------------------
# The real model: parity with `imgclf predict`, and no TensorFlow on the TFLite path
# --------------------------------------------------------------------------------------------


def _cli_predictions(model: Path, files: list[Path]) -> dict[str, dict]:
    result = runner.invoke(cli_app, ["predict", str(model), *map(str, files), "--json", "--top-k", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {Path(row["path"]).name: row for row in rows}


def _parity_files(folder: Path, corpus: Corpus) -> list[Path]:
    files = [make_image(folder / "red.png", (220, 40, 40), size=(40, 30), seed=3),
             make_image(folder / "green.jpg", (40, 220, 40), size=(23, 57), seed=4),
             make_image(folder / "blue.webp", (40, 40, 220), size=(16, 16), seed=5)]
    for case_id, name in (("C05", "rgba.png"), ("C08", "rotated_6.jpg"), ("C41", "normal.jpg"), ("C04", "cmyk.jpg")):
        files.append(corpus.path(case_id, name))
    return files


@pytest.mark.parametrize("which", ["bundle", "run"])
def test_server_matches_cli_predict(serve_client, tiny, corpus, tmp_path, which):
    run, bundle = tiny
    model = bundle if which == "bundle" else run
    files = _parity_files(tmp_path, corpus)
    expected = _cli_predictions(model, files)
    client = serve_client(model, top_k=3)
    for path in files:
        answer = client.post("/predict", files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        cli = expected[path.name]
        assert body["class"] == cli["class"], path.name
        assert body["confidence"] == pytest.approx(cli["confidence"], abs=1e-6), path.name
        assert [item["class"] for item in body["top_k"]] == [item["class"] for item in cli["top_k"]], path.name


def test_tflite_serving_imports_no_tensorflow(tiny):
    _, bundle = tiny
    script = f"""
import sys, io
from fastapi.testclient import TestClient
import imgclf.cli.serve
from imgclf.serving import ServeConfig, create_app
from PIL import Image
buffer = io.BytesIO()
Image.new("RGB", (20, 20), (200, 30, 30)).save(buffer, "PNG")
with TestClient(create_app({str(bundle)!r}, ServeConfig())) as client:
    for _ in range(500):
        if client.get("/ready").status_code == 200:
            break
        __import__("time").sleep(0.02)
    answer = client.post("/predict", files={{"file": ("a.png", buffer.getvalue(), "image/png")}})
    assert answer.status_code == 200, answer.text
    assert client.get("/metadata").json()["runtime"] == "tflite"
heavy = sorted(name for name in ("tensorflow", "keras", "sklearn", "matplotlib") if name in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout


def test_concurrent_requests_match_single_answers(serve_client, tiny, corpus):
    _, bundle = tiny
    client = serve_client(bundle, max_batch_size=8)
    files = corpus.files("C35")
    alone = {path.name: client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")}).json()
             for path in files}

    def post(path: Path):
        return path.name, client.post("/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, files * 4))
    assert len(answers) == 32
    for name, answer in answers:
        assert answer.status_code == 200
        assert answer.json()["class"] == alone[name]["class"]
        assert answer.json()["confidence"] == pytest.approx(alone[name]["confidence"], abs=1e-6)


@pytest.mark.parametrize("case_id, name, status, reasons", [
    ("C02", "cat_0002.jpg", 400, {"truncated", "corrupt"}),
    ("C12", "empty.jpg", 400, {"empty"}),
    ("C05", "rgba.png", 200, None),
    ("C08", "rotated_6.jpg", 200, None),
    ("C41", "normal.jpg", 200, None),
])
def test_corpus_uploads(serve_client, tiny, corpus, case_id, name, status, reasons):
    _, bundle = tiny
    path = corpus.path(case_id, name)
    answer = serve_client(bundle).post("/predict", files={"file": (name, path.read_bytes(), "image/jpeg")})
    assert answer.status_code == status, answer.text
    if reasons:
        assert answer.json()["reason"] in reasons
    else:
        assert type(answer.json()["confidence"]) is float


def test_corpus_wrong_field_and_raw_body(serve_client, tiny, corpus):
    _, bundle = tiny
    data = corpus.path("C39", "valid.jpg").read_bytes()
    client = serve_client(bundle)
    wrong_field = client.post("/predict", files={"image": ("valid.jpg", data, "image/jpeg")})
    assert wrong_field.status_code == 400
    assert wrong_field.json()["fields_received"] == ["image"]
    no_body = client.post("/predict")
    assert no_body.status_code == 400
    raw = client.post("/predict", content=data, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 415
    assert "multipart/form-data" in raw.json()["error"]


def test_exif_orientation_applied_like_cli(tiny, corpus):
    _, bundle = tiny
    model = ServedModel.load(bundle)
    path = corpus.path("C08", "rotated_6.jpg")
    from imgclf.imageio import load_image

    assert np.array_equal(model.decode(path.read_bytes()), load_image(path, model.predictor.image_size))


# --------------------------------------------------------------------------------------------
# A real `imgclf serve` process
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`imgclf serve MODEL` on a free loopback port, its stderr collected in a file."""

    def __init__(self, model: Path, log_path: Path, *options: str, env: Optional[dict] = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-c", "from imgclf.cli.main import run; run()", "serve", str(model),
                   "--port", str(self.port), *options]
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log,
                                        env={**os.environ, **(env or {})})

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {seconds} s:\n{self.log()}")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


def post_file(url: str, name: str, data: bytes, timeout: float = 30) -> tuple[int, dict]:
    boundary = "imgclf-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def server(tmp_path):
    started = []

    def start(model: Path, *options: str, env: Optional[dict] = None) -> ServerProcess:
        process = ServerProcess(model, tmp_path / f"server{len(started)}.log", *options, env=env)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


def test_first_request_is_not_slow(server, tiny, tmp_path):
    """The Keras runtime traces its graph on the first call; the warm-up does that before /ready."""
    run, _ = tiny
    process = server(run)
    image = make_image(tmp_path / "a.webp", (220, 40, 40), size=(64, 48)).read_bytes()
    urllib.request.urlopen(process.url + "/health", timeout=10).read()
    latencies = []
    for _ in range(11):
        started = time.perf_counter()
        status, _ = post_file(process.url + "/predict", "a.webp", image)
        latencies.append(time.perf_counter() - started)
        assert status == 200
    typical = float(np.median(latencies[1:]))
    # The bound leaves room for a busy machine; an untraced first call of this model took 0.5 s.
    assert latencies[0] < 3 * typical + 0.25, f"first {latencies[0]:.4f} s, then a median of {typical:.4f} s"


def test_load_has_no_failures_and_bounded_memory(server, tiny, tmp_path):
    """2,000 requests at concurrency 16: no failure, and resident memory within 15 % + 20 MB of post-warm-up."""
    load_script = shared_path("baseline", "load.py")
    _, bundle = tiny
    process = server(bundle)
    image = make_image(tmp_path / "a.jpg", (40, 220, 40), size=(96, 72))
    after_warm_up = process.rss_kb()
    result = subprocess.run(
        [sys.executable, str(load_script), process.url + "/predict", str(image), "--count", "2000",
         "--concurrency", "16", "--timeout", "240"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    after_load = process.rss_kb()
    assert report["requests"] == 2000
    assert report["failures"] == 0
    assert after_load <= after_warm_up * 1.15 + 20_000, f"RSS {after_warm_up} kB after warm-up, {after_load} kB after load"


def test_sigterm_finishes_request_in_flight(server, tiny, tmp_path):
    _, bundle = tiny
    # A lone request waits up to 1.5 s for batch-mates, so it is still in flight at SIGTERM.
    process = server(bundle, "--max-latency-ms", "1500")
    image = make_image(tmp_path / "a.png", (220, 40, 40)).read_bytes()
    outcome = {}
    sender = threading.Thread(target=lambda: outcome.update(answer=post_file(process.url + "/predict", "a.png", image)))
    sender.start()
    time.sleep(0.5)
    process.process.send_signal(signal.SIGTERM)
    sender.join(30)
    status, body = outcome["answer"]
    assert status == 200
    assert body["class"] == "cat"
    assert process.process.wait(30) in (0, -signal.SIGTERM)
    assert "Shutting down" in process.log()


def test_cli_missing_model_exits_6(tmp_path):
    result = runner.invoke(cli_app, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 6
    assert "model not found" in result.output


def test_cli_bad_config_key_exits_3(tmp_path, tiny):
    _, bundle = tiny
    config = tmp_path / "serve.yaml"
    config.write_text("prot: 8000\n", "utf-8")
    result = runner.invoke(cli_app, ["serve", str(bundle), "--config", str(config)])
    assert result.exit_code == 3
    assert "did you mean 'port'?" in result.output


def test_cli_api_key_from_environment(server, tiny, tmp_path):
    _, bundle = tiny
    process = server(bundle, env={"IMGCLF_API_KEY": "from-env"})
    image = make_image(tmp_path / "a.png", (220, 40, 40)).read_bytes()
    status, body = post_file(process.url + "/predict", "a.png", image)
    assert status == 401
    assert body["reason"] == "unauthorized"



# --------------------------------------------------------------------------------------------
# The serving image: its requirement list and its Dockerfile
# --------------------------------------------------------------------------------------------


def test_requirements_split_extra_marker():
    from imgclf.serving.requirements import split_marker

    assert split_marker('uvloop<1,>=0.19; sys_platform != "win32" and extra == "serve"') == (
        "uvloop<1,>=0.19", "serve", 'sys_platform != "win32"')
    assert split_marker('fastapi<1; extra == "serve"') == ("fastapi<1", "serve", "")
    assert split_marker("numpy<3,>=2.0") == ("numpy<3,>=2.0", None, "")


def test_requirements_litert_has_no_tensorflow():
    from imgclf.serving.requirements import serving_requirements

    names = [line.split("<")[0].split(">")[0].split(";")[0].strip().lower() for line in serving_requirements("litert")]
    assert "ai-edge-litert" in names
    assert "fastapi" in names
    assert "tensorflow" not in names
    assert "keras" not in names
    with_tensorflow = serving_requirements("tensorflow")
    assert any(line.startswith("tensorflow") for line in with_tensorflow)


def test_requirements_auto_follows_bundle(tmp_path, tiny):
    from imgclf.serving.requirements import choose_runtime

    run, bundle = tiny
    assert choose_runtime("auto", bundle) == "litert"
    assert choose_runtime("auto", run) == "tensorflow"
    assert choose_runtime("tensorflow", bundle) == "tensorflow"


def test_dockerfile_runs_as_non_root_with_health_check():
    text = (Path(__file__).resolve().parents[1] / "Dockerfile").read_text("utf-8")
    assert "ARG BASE_IMAGE=python:" in text
    assert "USER 10001" in text
    assert "HEALTHCHECK" in text
    assert "/health" in text
    assert text.count("FROM ${BASE_IMAGE}") == 2


def test_predict_answers_unknown_below_threshold(serve_client, tiny, tmp_path):
    _, bundle = tiny
    image = make_image(tmp_path / "red.png", (220, 40, 40), size=(20, 20), seed=8)
    sure = serve_client(bundle).post("/predict", files={"file": ("red.png", image.read_bytes(), "image/png")}).json()
    unsure_client = serve_client(bundle, unknown_threshold=1.0)
    unsure = unsure_client.post("/predict", files={"file": ("red.png", image.read_bytes(), "image/png")}).json()
    assert unsure["class"] == "unknown"
    assert unsure["best_guess"] == sure["class"]
    assert unsure["confidence"] == pytest.approx(sure["confidence"])
