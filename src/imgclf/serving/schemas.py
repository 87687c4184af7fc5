"""Response and request shapes of the HTTP API, for the OpenAPI document at /docs.

Handlers build plain dicts and send them as JSON without validating them against these models,
which costs time on every request; `tests/test_serve.py` checks that real responses fit them.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class ClassProbability(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class")
    probability: float


class ModelRef(BaseModel):
    name: str
    version: str = Field(description="The first 12 hex digits of the served model file's SHA-256.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class", description="The most probable class.")
    confidence: float = Field(ge=0, le=1, description="Its probability.")
    top_k: list[ClassProbability] = Field(description="The most probable classes, highest first.")
    model: ModelRef
    request_id: str


class BatchItem(BaseModel):
    """One file's result: a prediction, or the error that stopped it."""

    model_config = ConfigDict(populate_by_name=True)

    file: str
    class_name: Optional[str] = Field(None, alias="class")
    confidence: Optional[float] = None
    top_k: Optional[list[ClassProbability]] = None
    error: Optional[str] = None
    reason: Optional[str] = None
    status: Optional[int] = Field(None, description="The status a single /predict of this file would have had.")


class BatchResponse(BaseModel):
    results: list[BatchItem] = Field(description="One entry per file, in the order sent.")
    model: ModelRef
    request_id: str


class ErrorResponse(BaseModel):
    """Every error answer. Some add fields, such as `fields_received` or `max_upload_mb`."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What failed and how to fix it.")
    reason: str = Field(description="A short code: missing_file, empty, not_an_image, too_many_pixels, ...")
    request_id: str


class ReadyResponse(BaseModel):
    ready: bool
    status: str = Field(description="loading, ready, failed or stopping.")
    model: Optional[ModelRef] = None
    load_seconds: Optional[float] = None
    warmup_seconds: Optional[float] = None
    error: Optional[str] = None


# Request bodies, written out because handlers read the body themselves: to reject a missing
# field with the fields received, and a wrong content type with 415.
PREDICT_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary"}}},
        },
        "application/json": {
            "schema": {"type": "object", "required": ["b64"],
                       "properties": {"b64": {"type": "string", "description": "The image file, base64-encoded."}}},
        },
    },
}

BATCH_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["files"],
                       "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
        },
        "application/json": {
            "schema": {"type": "object", "required": ["images"], "properties": {"images": {
                "type": "array",
                "items": {"type": "object", "required": ["b64"], "properties": {
                    "b64": {"type": "string"}, "name": {"type": "string"}}},
            }}},
        },
    },
}
