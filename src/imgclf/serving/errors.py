"""Errors the API returns on purpose, and the JSON body of every error response."""

from __future__ import annotations

import json
from typing import Optional


class ApiError(Exception):
    """An expected failure, sent as `status` with a JSON body: error, reason, request id and `extra`."""

    def __init__(self, status: int, message: str, reason: str, headers: Optional[dict] = None, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers
        self.extra = extra


def error_body(message: str, reason: str, request_id: str, **extra) -> bytes:
    """Encode the JSON body of every error response: `error`, `reason`, `request_id` and any extra fields."""
    return json.dumps({"error": message, "reason": reason, "request_id": request_id, **extra}).encode()


def describe_megabytes(n_bytes: float) -> str:
    return f"{n_bytes / 1_000_000:g} MB"
