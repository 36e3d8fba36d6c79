"""Anthropic and Google error bodies → GatewayError (wire-formats.md §2.5, §3).

Anthropic: ``{"type":"error","error":{"type","message"},"request_id"}``.
Vertex platform errors: ``{"error":{"code","message","status"}}``, sometimes
wrapped in a JSON array. Both arrive on either backend type's error path.
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDictProxy

from ... import codec
from ...errors import GatewayError, UpstreamHTTPError, upstream_http_error

# Anthropic error.type → the HTTP status it stands for (used for mid-stream errors).
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "gateway_timeout_error": 504,
    "overloaded_error": 529,
}


def _fields(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, anthropic error type, google status) from either envelope."""
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return body[:500].decode("utf-8", "replace").strip(), None, None
    if isinstance(data, list) and data:
        data = data[0]
    if not isinstance(data, dict):
        return str(data)[:500], None, None
    err = data.get("error", data)
    if not isinstance(err, dict):
        return str(err)[:2000], None, None
    message = str(err.get("message") or "")[:2000]
    etype = err.get("type")
    status = err.get("status")
    return (
        message,
        etype if isinstance(etype, str) else None,
        status if isinstance(status, str) else None,
    )


def http_error(
    backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
) -> GatewayError:
    """``open_response``'s error_parser for both Anthropic backend types."""
    message, etype, gstatus = _fields(body)
    if etype == "overloaded_error":
        status = 529  # reported with other statuses too; it is an overload either way
    return upstream_http_error(
        backend_id,
        status,
        message or f"upstream returned HTTP {status}",
        retry_after=headers.get("Retry-After"),
        upstream_type=etype,
        upstream_code=gstatus.lower() if gstatus else None,
    )


def ok_body_error(backend_id: str, body: bytes, headers: CIMultiDictProxy[str]) -> GatewayError:
    """An error envelope sent with HTTP 200: mapped like the status its type stands for."""
    _, etype, _ = _fields(body)
    return http_error(backend_id, _STATUS_BY_TYPE.get(etype or "", 500), body, headers)


def stream_error(backend_id: str, etype: str, message: str) -> UpstreamHTTPError:
    """An ``event: error`` inside a 200 stream, mapped like the HTTP status it stands for."""
    status = _STATUS_BY_TYPE.get(etype, 500)
    err = upstream_http_error(backend_id, status, message or etype, upstream_type=etype)
    if status < 500 and status not in (401, 403, 429):
        err.message = f"backend '{backend_id}' reported an error mid-stream: {err.message}"
    return err
