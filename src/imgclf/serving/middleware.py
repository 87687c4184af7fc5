"""The ASGI middleware around every request: id, body limit, timeout, error shield, metrics, log line.

It is plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which costs a task and a stream
per request. For each HTTP request it:

1. takes the client's `X-Request-ID` when it is a short token, else makes one, and returns it
   in the `X-Request-ID` header (handlers read it from `request.state.request_id`);
2. responds 413 when `Content-Length`, or the bytes actually received, exceed the upload limit;
3. responds 504 when the request, upload included, takes longer than the timeout;
4. turns an unexpected exception into a JSON 500 that carries only the request id, and logs
   the traceback with that id;
5. counts the request in the Prometheus metrics and logs one line: id, method, path, status,
   latency and, for rejected requests, the reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Optional

from imgclf.serving.errors import describe_megabytes, error_body
from imgclf.serving.metrics import ServeMetrics

logger = logging.getLogger("imgclf.serve")

# A client-supplied request id is kept only when it is this kind of short token, so it can go
# into log lines and headers as it is.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class BodyTooLarge(Exception):
    """The request body grew past the upload limit while it was being received."""


class RequestMiddleware:
    """Wrap an ASGI app with the per-request steps in this module's docstring.

    Args:
        app: the inner ASGI app.
        metrics: where requests are counted.
        max_body_bytes: largest request body accepted.
        timeout_s: seconds a request may take before the response is 504.
        access_log: whether to log one line per request.
    """

    def __init__(self, app, metrics: ServeMetrics, max_body_bytes: int, timeout_s: float, access_log: bool = True):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.access_log = access_log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        response = _ResponseTracker(send, request_id)
        try:
            await self._handle(scope, receive, response, request_id)
        finally:
            self._record(scope, state, response.status, time.perf_counter() - started, request_id)

    async def _handle(self, scope, receive, response: "_ResponseTracker", request_id: str) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            scope["state"]["error_reason"] = "body_too_large"
            await response.send_json(413, error_body(
                f"request body of {describe_megabytes(declared)} is over the limit of "
                f"{describe_megabytes(self.max_body_bytes)} (max_upload_mb)", "body_too_large", request_id,
                max_upload_mb=self.max_body_bytes / 1_000_000))
            return
        try:
            await asyncio.wait_for(self.app(scope, self._limited(receive), response.send), self.timeout_s)
        except BodyTooLarge:
            scope["state"]["error_reason"] = "body_too_large"
            await response.send_json_if_unstarted(413, error_body(
                f"request body is over the limit of {describe_megabytes(self.max_body_bytes)} (max_upload_mb)",
                "body_too_large", request_id, max_upload_mb=self.max_body_bytes / 1_000_000))
        except asyncio.TimeoutError:
            scope["state"]["error_reason"] = "timeout"
            logger.warning("request_id=%s timed out after %g s (request_timeout_s)", request_id, self.timeout_s)
            await response.send_json_if_unstarted(504, error_body(
                f"request timed out after {self.timeout_s:g} s (request_timeout_s)", "timeout", request_id))
        except Exception:
            # Unexpected: the traceback stays in the server log under this id, and the client gets
            # only the id to quote.
            scope["state"]["error_reason"] = "internal_error"
            logger.exception("request_id=%s failed with an unexpected error", request_id)
            await response.send_json_if_unstarted(500, error_body(
                "internal server error; the server log has the details under this request id",
                "internal_error", request_id))

    def _limited(self, receive):
        received = 0
        limit = self.max_body_bytes

        async def receive_limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        return receive_limited

    def _record(self, scope, state: dict, status: Optional[int], seconds: float, request_id: str) -> None:
        route = scope.get("route")
        route_path = getattr(route, "path", None) or "unmatched"
        status = status or 500
        self.metrics.requests.labels(route_path, scope["method"], str(status)).inc()
        self.metrics.latency.labels(route_path).observe(seconds)
        if self.access_log:
            reason = state.get("error_reason")
            logger.info(
                "request_id=%s method=%s path=%s status=%d latency_ms=%.1f%s", request_id, scope["method"],
                scope["path"], status, seconds * 1000, f" reason={reason}" if reason else "")


class _ResponseTracker:
    """Wrap `send`: remember the status, add `X-Request-ID`, and send JSON errors when nothing was sent yet."""

    def __init__(self, send, request_id: str):
        self._send = send
        self._request_id = request_id.encode()
        self.status: Optional[int] = None

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", self._request_id)]
        await self._send(message)

    async def send_json(self, status: int, body: bytes) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await self.send({"type": "http.response.body", "body": body})

    async def send_json_if_unstarted(self, status: int, body: bytes) -> None:
        if self.status is None:
            await self.send_json(status, body)
        else:
            logger.warning("request_id=%s: the response had started, so the %d could not be sent", self._request_id.decode(), status)


def _request_id(scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _CLIENT_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def _content_length(scope) -> Optional[int]:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
