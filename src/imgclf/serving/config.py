"""The serving config: `serve.yaml` keys, their defaults, and validation.

A config is validated once, in `load_serve_config`; the server trusts what it receives.
Command-line flags of `imgclf serve` mirror these keys and override the file.

This module imports pydantic and PyYAML only, so a serving image without TensorFlow loads it.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.errors import ConfigError

# The environment variable `imgclf serve` reads the API key from when `--api-key` is not given.
API_KEY_ENV = "IMGCLF_API_KEY"


class ServeConfig(BaseModel):
    """Settings of one `imgclf serve` process.

    The API key is deliberately not a key of the file: it comes from `--api-key` or the
    `IMGCLF_API_KEY` environment variable, so it never sits in a config that gets committed.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on; 0.0.0.0 for every interface.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    max_upload_mb: float = Field(10.0, gt=0, description="Largest request body in megabytes (10^6 bytes); larger ones get 413.")
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Largest width x height decoded; larger images get 413.")
    max_batch_files: int = Field(64, ge=1, description="Most files one POST /predict/batch may carry.")
    top_k: int = Field(5, ge=1, description="Classes listed per result when the request gives no ?top_k=.")
    unknown_threshold: Optional[float] = Field(
        None, ge=0.0, le=1.0,
        description="Answer class \"unknown\" (with best_guess) when the calibrated confidence is below this.")
    max_batch_size: int = Field(8, ge=1, description="Most images per model call when concurrent requests are batched.")
    max_latency_ms: float = Field(
        0.0, ge=0, le=10_000,
        description="Milliseconds a model call waits for more requests to batch; 0 batches only requests already queued.",
    )
    max_queue_size: int = Field(64, ge=1, description="Predict requests admitted at once; one more gets 503.")
    request_timeout_s: float = Field(30.0, gt=0, description="Seconds a request may take, upload included; then 504.")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="Seconds a shutdown waits for requests in flight.")
    threads: Optional[int] = Field(None, ge=1, description="LiteRT threads for a .tflite model; default one per CPU.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed to call the API from a browser; '*' for any.")
    access_log: bool = Field(True, description="Log one line per request: id, method, path, status, latency.")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)


def validate_serve_config(raw: Any, source: str) -> ServeConfig:
    """Validate a mapping of serving keys; `source` names where it came from in messages.

    Raises:
        ConfigError: one line per invalid key, naming the key, the value and the accepted form,
            and for an unknown key the nearest valid one.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of serving keys such as port and max_upload_mb")
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("\n".join(_format_errors(exc.errors(), source))) from None


def load_serve_config(path: Optional[Union[str, os.PathLike]], overrides: Optional[dict] = None) -> ServeConfig:
    """Read `serve.yaml` (when a path is given), apply command-line values over it and validate.

    `overrides` maps keys to values; None values are left out, so an option the user did not
    give keeps the file's value.

    Raises:
        ConfigError: the file is missing or not YAML, or a key or value is invalid.
    """
    from imgclf.config import read_yaml

    raw = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "serve options"
    if isinstance(raw, dict):
        raw = {**raw, **{key: value for key, value in (overrides or {}).items() if value is not None}}
        if overrides and any(value is not None for value in overrides.values()) and path is not None:
            source += " (with command-line options)"
    return validate_serve_config(raw, source)


def _nearest_key(key: str) -> Optional[str]:
    if key in ("api_key", "api-key"):
        return None
    match = difflib.get_close_matches(key.replace("-", "_"), list(ServeConfig.model_fields), n=1, cutoff=0.6)
    return match[0] if match else None


def _format_errors(errors: list[dict], source: str) -> list[str]:
    lines = []
    for error in errors:
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            if key in ("api_key", "api-key"):
                lines.append(f"{source}: unknown key {key!r}; give the API key with --api-key or {API_KEY_ENV}")
                continue
            nearest = _nearest_key(key)
            hint = f"; did you mean {nearest!r}?" if nearest else ""
            lines.append(f"{source}: unknown key {key!r}{hint}")
        else:
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{source}: {key} = {error.get('input')!r} is invalid: {message}")
    return lines
