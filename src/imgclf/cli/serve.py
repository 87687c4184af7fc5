"""`imgclf serve`: serve predictions over HTTP with a run's model or an export bundle."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgclf.cli.common import cli_errors, print_error, quiet_tensorflow, setup_logging

SERVE_EXTRA_HINT = "imgclf serve needs the serving packages: pip install 'imgclf[serve]'"


def serve_command(
    model: Path = typer.Argument(..., help="Run directory or export bundle; a bundle with model.tflite runs on LiteRT."),
    host: Optional[str] = typer.Option(
        None, "--host", envvar="IMGCLF_HOST", show_envvar=True,
        help="Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)."),
    port: Optional[int] = typer.Option(
        None, "--port", "-p", min=0, max=65535, envvar="IMGCLF_PORT", show_envvar=True, help="TCP port (default 8000)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="serve.yaml with any serving keys; options given here override it."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", envvar="IMGCLF_API_KEY", show_envvar=True,
        help="Require this key (X-API-Key header or Bearer token) on /predict and /metadata."),
    max_upload_mb: Optional[float] = typer.Option(None, "--max-upload-mb", help="Largest request body in MB (default 10)."),
    max_image_pixels: Optional[int] = typer.Option(None, "--max-image-pixels", min=1, help="Largest width x height decoded; larger images get 413."),
    top_k: Optional[int] = typer.Option(None, "--top-k", "-k", min=1, help="Classes listed when a request gives no ?top_k= (default 5)."),
    max_batch_size: Optional[int] = typer.Option(None, "--max-batch-size", min=1, help="Maximum images per model call (default 8)."),
    max_latency_ms: Optional[float] = typer.Option(
        None, "--max-latency-ms", min=0, help="Milliseconds a model call waits to batch more requests (default 0: never waits)."),
    max_queue_size: Optional[int] = typer.Option(None, "--max-queue-size", min=1, help="Predict requests in flight before 503 (default 64)."),
    request_timeout_s: Optional[float] = typer.Option(None, "--request-timeout-s", help="Seconds a request may take before 504 (default 30)."),
    cors_origins: Optional[List[str]] = typer.Option(
        None, "--cors-origin", help="Origin allowed to call the API from a browser; repeat for several, '*' for any."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="LiteRT threads for a .tflite model (default: one per CPU)."),
    access_log: Optional[bool] = typer.Option(None, "--access-log/--no-access-log", help="Log one line per request (default on)."),
) -> None:
    """Serve predictions over HTTP: POST /predict, /predict/batch, GET /ready, /metadata, /metrics, /docs and a page at /."""
    setup_logging()
    with cli_errors():
        try:
            from imgclf.serving.config import load_serve_config
            from imgclf.serving.server import run_server
        except ImportError as error:
            print_error(f"{SERVE_EXTRA_HINT} ({error})")
            raise typer.Exit(1) from None
        from imgclf.runs import resolve_model

        options = {
            "host": host, "port": port, "max_upload_mb": max_upload_mb, "max_image_pixels": max_image_pixels, "top_k": top_k,
            "max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms, "max_queue_size": max_queue_size,
            "request_timeout_s": request_timeout_s, "cors_origins": cors_origins or None, "threads": threads,
            "access_log": access_log,
        }
        settings = load_serve_config(config, options)
        resolved = resolve_model(model)
        if resolved.runtime != "tflite":
            quiet_tensorflow()
        run_server(resolved, settings, api_key)
