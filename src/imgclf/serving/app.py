"""The FastAPI application: routes, model loading at start-up, and the response to each error.

Routes:

    GET  /                the page where a person drops an image and sees the top classes
    GET  /health          200 while the process runs
    GET  /ready           200 once the model is loaded and warmed up, else 503
    GET  /metadata        classes, input size, version and recorded metrics of the model
    GET  /metrics         Prometheus metrics
    POST /predict         one image: multipart field `file`, or JSON {"b64": ...}; ?top_k=N
    POST /predict/batch   several images: multipart fields `files`, or JSON {"images": [...]}
    GET  /docs            the OpenAPI document, rendered

The model loads on a worker thread after the server starts listening, so /health responds at
once and /ready turns true after the warm-up. Decoding runs on a thread pool and the model on
the micro-batcher's thread (`imgclf.serving.batching`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Union

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from imgclf.errors import ImageError, ImgclfError
from imgclf.runs import ResolvedModel
from imgclf.serving import schemas
from imgclf.serving.batching import BatcherClosed, MicroBatcher
from imgclf.serving.config import ServeConfig
from imgclf.serving.errors import ApiError, error_body
from imgclf.serving.metrics import ServeMetrics
from imgclf.serving.middleware import RequestMiddleware
from imgclf.serving.model import ServedModel, sample_images
from imgclf.serving.page import render_page
from imgclf.serving.uploads import read_many, read_single

logger = logging.getLogger("imgclf.serve")

# Status codes for the decoder's reasons; every other reason is a bad upload (400).
IMAGE_ERROR_STATUS = {"too_many_pixels": 413}
# Seconds the Retry-After header of a 503 response asks a client to wait.
RETRY_AFTER_S = 1

ModelSource = Union[str, os.PathLike, ResolvedModel, ServedModel]


class ServerState:
    """State shared by the routes: the config, the model once loaded, the batcher and the metrics."""

    def __init__(self, config: ServeConfig, api_key: Optional[str]):
        self.config = config
        self.api_key = api_key
        self.metrics = ServeMetrics()
        self.model: Optional[ServedModel] = None
        self.status = "loading"
        self.load_error: Optional[str] = None
        self.in_flight = 0
        self.batcher = MicroBatcher(self._predict_batch, config.max_batch_size, config.max_latency_ms,
                                    on_batch=self.metrics.observe_batch)
        # Pillow releases the GIL while decoding, so one thread per CPU decodes in parallel.
        self.decode_threads = os.cpu_count() or 1
        self.decode_pool: Optional[ThreadPoolExecutor] = None

    def _predict_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.model.predict_pixels(batch)

    def require_ready(self) -> ServedModel:
        if self.status != "ready" or self.model is None:
            message = {"loading": "the model is still loading; retry when GET /ready returns 200",
                       "stopping": "the server is shutting down",
                       "failed": f"the model failed to load ({self.load_error})"}[self.status]
            raise ApiError(503, message, "not_ready", headers={"Retry-After": str(RETRY_AFTER_S)})
        return self.model

    @contextlib.contextmanager
    def admit(self):
        """Count a predict request in flight, or reject it with 503 when `max_queue_size` are."""
        if self.in_flight >= self.config.max_queue_size:
            self.metrics.rejected_busy.inc()
            raise ApiError(503, f"server busy: {self.in_flight} predict requests in flight, the limit is "
                           f"{self.config.max_queue_size} (max_queue_size); retry shortly", "busy",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)

    async def decode(self, model: ServedModel, name: str, data: bytes) -> np.ndarray:
        """Decode one upload on the decoding threads; an undecodable one raises `ApiError`."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.decode_pool, model.decode, data)
        except ImageError as error:
            self.metrics.images.labels(error.reason).inc()
            raise image_api_error(error, name) from None

    async def predict(self, model: ServedModel, pixels: np.ndarray) -> np.ndarray:
        try:
            row = await self.batcher.predict(pixels)
        except BatcherClosed:
            raise ApiError(503, "the server is shutting down", "not_ready") from None
        self.metrics.images.labels("predicted").inc()
        return row


def image_api_error(error: ImageError, name: str) -> ApiError:
    """Turn a decoder error into a 400 or 413 naming the uploaded file and the problem."""
    message = str(error).replace("uploaded image", f"uploaded file {name!r}", 1)
    if error.reason == "too_many_pixels":
        # The decoder's fix names the training config key; the server's key is another.
        message = message.split("; raise data.max_image_pixels", 1)[0] + " (max_image_pixels)"
    return ApiError(IMAGE_ERROR_STATUS.get(error.reason, 400), message, error.reason)


def create_app(model: ModelSource, config: Optional[ServeConfig] = None, api_key: Optional[str] = None,
               on_load_failure: Optional[Callable[[BaseException], None]] = None) -> FastAPI:
    """Build the serving app for a run directory, a bundle, or an already loaded `ServedModel`.

    Args:
        model: what to serve. A path or `ResolvedModel` is loaded and warmed up on a worker
            thread when the app starts; a `ServedModel` is warmed up there.
        config: the serving settings; default `ServeConfig()`.
        api_key: when set, /predict, /predict/batch and /metadata need it in the `X-API-Key`
            header or as `Authorization: Bearer <key>`, and respond 401 without it.
        on_load_failure: called with the exception when loading fails (the CLI stops the server).
    """
    config = config or ServeConfig()
    state = ServerState(config, api_key or None)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.decode_pool = ThreadPoolExecutor(max_workers=state.decode_threads, thread_name_prefix="imgclf-decode")
        state.batcher.start()
        loading = asyncio.get_running_loop().create_task(_load_model(state, model, on_load_failure))
        try:
            yield
        finally:
            state.status = "stopping" if state.status == "ready" else state.status
            loading.cancel()
            await state.batcher.stop()
            state.decode_pool.shutdown(wait=False)

    app = FastAPI(
        title="imgclf serve",
        summary="Image classification with a model trained and exported by imgclf.",
        lifespan=lifespan,
    )
    app.state.serving = state
    app.add_middleware(RequestMiddleware, metrics=state.metrics, max_body_bytes=config.max_upload_bytes,
                       timeout_s=config.request_timeout_s, access_log=config.access_log)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "X-API-Key", "Authorization", "X-Request-ID"],
                           expose_headers=["X-Request-ID"])
    _add_error_handlers(app)
    _add_routes(app, state)
    return app


async def _load_model(state: ServerState, source: ModelSource, on_load_failure) -> None:
    config = state.config
    try:
        if isinstance(source, ServedModel):
            model = source
        else:
            model = await asyncio.to_thread(ServedModel.load, source, config.max_image_pixels, config.threads)
        batch_sizes = tuple(sorted({1, config.max_batch_size}))
        await asyncio.to_thread(model.warm_up, batch_sizes)
        await _start_decode_threads(state, model)
    except Exception as error:
        state.status = "failed"
        state.load_error = str(error) if isinstance(error, ImgclfError) else f"unexpected {type(error).__name__}"
        if isinstance(error, ImgclfError):
            logger.error("model failed to load: %s", error)
        else:
            logger.exception("model failed to load")
        if on_load_failure is not None:
            on_load_failure(error)
        return
    state.model = model
    state.metrics.model_load.set(model.load_seconds)
    state.metrics.model_warmup.set(model.warmup_seconds or 0.0)
    state.status = "ready"
    info = model.info
    logger.info("model %s version %s ready: %s runtime, %d classes, %dx%d input; loaded in %.2f s, warmed up in %.2f s",
                info.name, info.version, info.runtime, len(info.classes), info.image_size[0], info.image_size[1],
                model.load_seconds, model.warmup_seconds)


async def _start_decode_threads(state: ServerState, model: ServedModel) -> None:
    """Decode a sample on every decoding thread, so that no request waits for a thread to start."""
    loop = asyncio.get_running_loop()
    sample = sample_images(model.predictor.image_size)[1]
    await asyncio.gather(*(loop.run_in_executor(state.decode_pool, model.decode, sample)
                           for _ in range(state.decode_threads)))


def _add_error_handlers(app: FastAPI) -> None:
    def respond(request: Request, status: int, message: str, reason: str, headers=None, **extra) -> Response:
        request.state.error_reason = reason
        body = error_body(message, reason, request.state.request_id, **extra)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        return respond(request, error.status, error.message, error.reason, error.headers, **error.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return respond(request, error.status_code, str(error.detail), reason, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'][1:]) or 'request'} = {item.get('input')!r}: {item['msg']}"
            for item in error.errors())
        return respond(request, 400, f"invalid request: {problems}", "invalid_parameter")


def _add_routes(app: FastAPI, state: ServerState) -> None:
    config = state.config

    async def check_api_key(request: Request) -> None:
        if state.api_key is None:
            return
        given = request.headers.get("x-api-key")
        if given is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            given = token.strip() if scheme.lower() == "bearer" else None
        if given is None or not hmac.compare_digest(given.encode(), state.api_key.encode()):
            raise ApiError(401, "missing or invalid API key; send it in the X-API-Key header or as "
                           "'Authorization: Bearer <key>'", "unauthorized", headers={"WWW-Authenticate": "Bearer"})

    protected = [Depends(check_api_key)]
    error_responses = {status: {"model": schemas.ErrorResponse} for status in (400, 401, 413, 415, 500, 503, 504)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(render_page(api_key_required=state.api_key is not None, top_k=config.top_k))

    @app.get("/health", summary="Whether the process is alive")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", summary="Whether the model is loaded and warmed up", response_model=schemas.ReadyResponse,
             responses={503: {"model": schemas.ReadyResponse}})
    async def ready() -> Response:
        body: dict = {"ready": state.status == "ready", "status": state.status}
        if state.model is not None:
            body.update(model=_model_ref(state.model), load_seconds=round(state.model.load_seconds, 3),
                        warmup_seconds=round(state.model.warmup_seconds or 0.0, 3))
        if state.load_error:
            body["error"] = state.load_error
        status = 200 if state.status == "ready" else 503
        return JSONResponse(body, status_code=status, headers=None if status == 200 else {"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/metadata", summary="The served model: classes, input, version and recorded metrics",
             dependencies=protected, responses=error_responses)
    async def metadata() -> dict:
        model = state.require_ready()
        return {**model.info.to_json(), "limits": {
            "max_upload_mb": config.max_upload_mb, "max_image_pixels": config.max_image_pixels,
            "max_batch_files": config.max_batch_files, "default_top_k": config.top_k,
        }}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    @app.post("/predict", summary="Classify one image", dependencies=protected,
              response_model=schemas.PredictResponse, responses=error_responses,
              openapi_extra={"requestBody": schemas.PREDICT_REQUEST_BODY})
    async def predict(request: Request, top_k: Optional[int] = Query(None, ge=1, description="Classes to list.")):
        model = state.require_ready()
        with state.admit():
            name, data = await read_single(request)
            pixels = await state.decode(model, name, data)
            row = await state.predict(model, pixels)
        body = _prediction(model, row, top_k or config.top_k, config.unknown_threshold)
        body.update(model=_model_ref(model), request_id=request.state.request_id)
        return JSONResponse(body)

    @app.post("/predict/batch", summary="Classify several images, one result per image in order",
              dependencies=protected, response_model=schemas.BatchResponse, responses=error_responses,
              openapi_extra={"requestBody": schemas.BATCH_REQUEST_BODY})
    async def predict_batch(request: Request, top_k: Optional[int] = Query(None, ge=1, description="Classes to list.")):
        model = state.require_ready()
        with state.admit():
            uploads = await read_many(request, config.max_batch_files)
            results = await asyncio.gather(*(_predict_item(state, model, name, data, top_k or config.top_k,
                                                           config.unknown_threshold)
                                             for name, data in uploads))
        return JSONResponse({"results": results, "model": _model_ref(model), "request_id": request.state.request_id})


async def _predict_item(state: ServerState, model: ServedModel, name: str, data: bytes, top_k: int,
                        unknown_threshold: Optional[float] = None) -> dict:
    try:
        pixels = await state.decode(model, name, data)
    except ApiError as error:
        return {"file": name, "error": error.message, "reason": error.reason, "status": error.status}
    return {"file": name, **_prediction(model, await state.predict(model, pixels), top_k, unknown_threshold)}


def _prediction(model: ServedModel, row: np.ndarray, top_k: int, unknown_threshold: Optional[float] = None) -> dict:
    top = model.top_classes(row, top_k)
    body = {"class": top[0][0], "confidence": top[0][1],
            "top_k": [{"class": name, "probability": probability} for name, probability in top]}
    if unknown_threshold is not None and top[0][1] < unknown_threshold:
        # The same rule as `imgclf predict --unknown-threshold`: the best guess stays listed.
        body["best_guess"], body["class"] = top[0][0], "unknown"
    return body


def _model_ref(model: ServedModel) -> dict:
    return {"name": model.info.name, "version": model.info.version}
