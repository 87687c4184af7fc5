"""Running the app under uvicorn until SIGINT or SIGTERM, then shutting down gracefully.

On SIGTERM or Ctrl-C uvicorn stops accepting connections, waits up to `shutdown_timeout_s` for
the responses to the requests in flight, and then the app's shutdown finishes every image the
micro-batcher still holds.
"""

from __future__ import annotations

import logging
from typing import Optional

from imgclf.errors import ImgclfError, ModelError
from imgclf.serving.app import ModelSource, create_app
from imgclf.serving.config import ServeConfig

logger = logging.getLogger("imgclf.serve")


def run_server(model: ModelSource, config: ServeConfig, api_key: Optional[str] = None) -> None:
    """Serve `model` on `config.host`:`config.port` until the process receives SIGINT or SIGTERM.

    Raises:
        ModelError: the model failed to load after the server had started (the server stops).
    """
    import uvicorn

    failures: list[BaseException] = []

    def stop_on_load_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(model, config, api_key, on_load_failure=stop_on_load_failure)
    _share_log_handlers()
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=int(round(config.shutdown_timeout_s)), server_header=False,
    ))
    server.run()
    if failures:
        error = failures[0]
        if isinstance(error, ImgclfError):
            raise error
        raise ModelError(f"the model failed to load with an unexpected {type(error).__name__}; the log above has the traceback")


def _share_log_handlers() -> None:
    """Send uvicorn's start-up, shutdown and error messages where the `imgclf` logger writes."""
    source = logging.getLogger("imgclf")
    if not source.handlers:
        return
    for name in ("uvicorn", "uvicorn.error"):
        target = logging.getLogger(name)
        target.handlers[:] = source.handlers
        target.setLevel(logging.INFO)
        target.propagate = False
