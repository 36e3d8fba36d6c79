"""The Google error envelope (``google.rpc.Status``) → GatewayError: HTTP error bodies,
error events mid-stream, and a raw JSON error appended after the last SSE event."""

from __future__ import annotations

import math
import re
from typing import Any

from multidict import CIMultiDictProxy

from ... import codec
from ...errors import GatewayError, UpstreamHTTPError, upstream_http_error
from ...schema.gemini import Status

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _retry_delay(details: list[dict[str, Any]] | None) -> str | None:
    """RetryInfo.retryDelay ("34.4s") → whole seconds for Retry-After ("35")."""
    for detail in details or ():
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            m = _DURATION.match(str(detail.get("retryDelay", "")))
            if m:
                return str(math.ceil(float(m.group(1))))
    return None


def _status_of(body: bytes) -> Status | None:
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and data:  # Vertex wraps errors in an array
        data = data[0]
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    try:
        return codec.convert(data["error"], Status)
    except (codec.ValidationError, TypeError):
        return None


def status_error(
    backend_id: str, http_status: int, status: Status, retry_after: str | None = None
) -> UpstreamHTTPError:
    """A ``google.rpc.Status`` as the OpenAI error the client sees."""
    message = status.message or f"upstream returned HTTP {http_status}"
    code = None
    if status.status and http_status not in (404, 429):
        code = status.status.lower()
    return upstream_http_error(
        backend_id,
        http_status,
        message,
        retry_after=retry_after or _retry_delay(status.details),
        upstream_code=code,
    )


def gemini_error(
    backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
) -> GatewayError:
    """``open_response`` error parser for the Google error envelope."""
    parsed = _status_of(body)
    if parsed is None:
        text = body[:500].decode("utf-8", "replace").strip()
        parsed = Status(code=status, message=text)
    return status_error(backend_id, status, parsed, headers.get("Retry-After"))


def trailing_error(backend_id: str, tail: bytes) -> UpstreamHTTPError | None:
    """A raw (non-SSE) JSON error some Google front ends append before closing a stream."""
    start = tail.rfind(b'{\n  "error"')
    if start == -1:
        start = tail.rfind(b'{"error"')
    if start == -1:
        return None
    parsed = _status_of(tail[start:])
    if parsed is None:
        return None
    return mid_stream_error(backend_id, parsed)


def mid_stream_error(backend_id: str, status: Status) -> UpstreamHTTPError:
    err = status_error(backend_id, status.code or 502, status)
    if err.code != "upstream_auth_failed":  # never relay auth-error text (it may echo the key)
        err.message = f"backend '{backend_id}' reported an error mid-stream: {status.message}"
    err.retryable = False
    return err
