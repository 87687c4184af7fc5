"""Reading images out of requests: multipart uploads and JSON bodies with base64.

`read_single` and `read_many` return (file name, bytes) pairs or raise `ApiError`.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from imgclf.serving.errors import ApiError

# The multipart field of POST /predict, and those of POST /predict/batch.
FILE_FIELD = "file"
BATCH_FIELDS = ("files", "file")

ACCEPTED_SINGLE = (
    "multipart/form-data with the image in field 'file', or application/json {\"b64\": \"<base64 image>\"}"
)
ACCEPTED_BATCH = (
    "multipart/form-data with the images in fields 'files', or application/json "
    "{\"images\": [{\"b64\": \"<base64 image>\"}, ...]}"
)


async def read_single(request: Request) -> tuple[str, bytes]:
    """Return the (file name, bytes) of the one image a POST /predict carries."""
    kind = _media_type(request)
    if kind == "multipart/form-data":
        form = await _form(request, max_files=8)
        try:
            upload = form.get(FILE_FIELD)
            if upload is None:
                raise ApiError(400, f"missing multipart field '{FILE_FIELD}'; send {ACCEPTED_SINGLE}",
                               "missing_file", fields_received=sorted(set(form.keys())))
            return await _upload_bytes(upload, FILE_FIELD)
        finally:
            await form.close()
    if kind == "application/json":
        payload = await _json(request)
        if not isinstance(payload, dict) or "b64" not in payload:
            received = sorted(payload) if isinstance(payload, dict) else []
            raise ApiError(400, f"missing JSON key 'b64'; send {ACCEPTED_SINGLE}", "missing_file",
                           fields_received=received)
        return "b64", _decode_base64(payload["b64"], "b64")
    raise _unsupported(request, kind, ACCEPTED_SINGLE)


async def read_many(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """Return the (file name, bytes) of every image a POST /predict/batch carries, in order."""
    kind = _media_type(request)
    if kind == "multipart/form-data":
        form = await _form(request, max_files=max_files + 1)
        try:
            uploads = [(field, value) for field, value in form.multi_items() if field in BATCH_FIELDS]
            if not uploads:
                raise ApiError(400, f"missing multipart field 'files'; send {ACCEPTED_BATCH}", "missing_file",
                               fields_received=sorted(set(form.keys())))
            _check_count(len(uploads), max_files)
            return [await _upload_bytes(value, field) for field, value in uploads]
        finally:
            await form.close()
    if kind == "application/json":
        payload = await _json(request)
        images = payload.get("images") if isinstance(payload, dict) else None
        if not isinstance(images, list) or not images:
            received = sorted(payload) if isinstance(payload, dict) else []
            raise ApiError(400, f"missing or empty JSON list 'images'; send {ACCEPTED_BATCH}", "missing_file",
                           fields_received=received)
        _check_count(len(images), max_files)
        return [_json_image(item, index) for index, item in enumerate(images)]
    raise _unsupported(request, kind, ACCEPTED_BATCH)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _unsupported(request: Request, kind: str, accepted: str) -> ApiError:
    if not kind and request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return ApiError(400, f"empty request; send {accepted}", "missing_file", fields_received=[])
    return ApiError(415, f"Content-Type {kind or '(none)'!r} is not accepted; send {accepted}",
                    "unsupported_media_type", content_type=kind or None)


async def _form(request: Request, max_files: int):
    try:
        return await request.form(max_files=max_files, max_fields=32)
    except (HTTPException, MultiPartException) as error:
        # Starlette reports a malformed body, or more files than `max_files`, as an HTTPException.
        detail = error.detail if isinstance(error, HTTPException) else error.message
        if "many files" in str(detail).lower():
            raise ApiError(413, f"too many files in one request (at most {max_files - 1})", "too_many_files") from None
        raise ApiError(400, f"invalid multipart body ({detail})", "invalid_multipart") from None


async def _upload_bytes(value, field: str) -> tuple[str, bytes]:
    if not isinstance(value, UploadFile):
        raise ApiError(400, f"multipart field '{field}' contains text, not a file; send the image as a file part",
                       "not_a_file")
    return value.filename or field, await value.read()


async def _json(request: Request):
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"invalid JSON body ({error})", "invalid_json") from None


def _json_image(item, index: int) -> tuple[str, bytes]:
    if not isinstance(item, dict) or "b64" not in item:
        raise ApiError(400, f"images[{index}] has no 'b64' key; each entry is {{\"b64\": \"<base64 image>\"}}",
                       "missing_file")
    name = item.get("name")
    return (name if isinstance(name, str) and name else f"images[{index}]"), _decode_base64(item["b64"], f"images[{index}].b64")


def _decode_base64(value, key: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, f"{key} must be a base64 string, got {type(value).__name__}", "invalid_base64")
    text = value.strip()
    if text.startswith("data:") and "," in text:
        # A data URL, as a browser's FileReader produces: data:image/png;base64,<data>
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"{key} is not valid base64 ({error})", "invalid_base64") from None


def _check_count(count: int, max_files: int) -> None:
    if count > max_files:
        raise ApiError(413, f"{count} images in one request is over the limit of {max_files} (max_batch_files)",
                       "too_many_files", max_batch_files=max_files)
