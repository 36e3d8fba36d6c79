"""Every failure a client can see, as an OpenAI-format error.

    GatewayError(status, type, code, param, message)
    ├── InvalidRequest            400 invalid_request_error
    │   └── UnsupportedFeature    400 invalid_request_error / unsupported_feature
    ├── AuthenticationFailed      401 authentication_error
    ├── NotFound                  404 invalid_request_error / not_found
    │   └── ModelNotFound         404 invalid_request_error / model_not_found
    ├── MethodNotAllowed          405
    ├── RequestTooLarge           413
    ├── RateLimited               429 rate_limit_error (+ Retry-After)
    └── UpstreamError             an upstream failed; ``retryable`` says if failover may try another
        ├── UpstreamHTTPError     upstream 4xx/5xx mapped to a client status
        ├── UpstreamUnavailable   502 connection failed
        ├── UpstreamTimeout       504
        └── UpstreamProtocolError 502 the upstream sent something we cannot parse

``ConfigError`` is separate: it exists only at start-up and never reaches a client.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from chromagent_proxy.core import codec


class ConfigError(Exception):
    """A bad config or flag; the CLI prints it as one line and exits 2."""


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = None
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if retryable is not None:
            self.retryable = retryable
        self.headers: dict[str, str] = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return codec.dumps(self.to_dict())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnsupportedFeature(InvalidRequest):
    code = "unsupported_feature"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamError(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"
    retryable = True


class UpstreamHTTPError(UpstreamError):
    pass


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"
    retryable = False


# Upstream statuses a failover may retry on another backend (providers.md §3.3).
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def upstream_http_error(
    backend_id: str,
    status: int,
    message: str,
    *,
    retry_after: str | None = None,
    upstream_type: str | None = None,
    upstream_code: str | None = None,
    param: str | None = None,
) -> UpstreamHTTPError:
    """Map an upstream HTTP error to what the client sees.

    4xx the client caused keep their status; 401/403 become 502 because the
    client never sent those credentials; 429 keeps Retry-After; 529 and 503
    become 503; other 5xx become 502.
    """
    headers: dict[str, str] = {}
    if retry_after:
        headers["Retry-After"] = retry_after
    retryable = status in RETRYABLE_STATUSES
    if status in (401, 403):
        # Never the upstream's text: an upstream that echoes the rejected key would hand
        # the gateway's provider key to the client.
        return UpstreamHTTPError(
            f"backend '{backend_id}' rejected the gateway's credentials "
            f"(upstream status {status}); check the backend's apiKey or credentials",
            status=502,
            type="api_error",
            code="upstream_auth_failed",
            retryable=False,
        )
    if status == 429:
        return UpstreamHTTPError(
            f"backend '{backend_id}' is rate limited: {message}",
            status=429,
            type="rate_limit_error",
            code=upstream_code or "rate_limit_exceeded",
            headers=headers,
            retryable=True,
        )
    if status in (503, 529):
        return UpstreamHTTPError(
            f"backend '{backend_id}' is overloaded: {message}",
            status=503,
            type="api_error",
            code="upstream_overloaded",
            headers=headers,
            retryable=True,
        )
    if status == 504:
        return UpstreamHTTPError(
            f"backend '{backend_id}' timed out: {message}",
            status=504,
            type="api_error",
            code="upstream_timeout",
            retryable=True,
        )
    if status >= 500:
        return UpstreamHTTPError(
            f"backend '{backend_id}' failed with status {status}: {message}",
            status=502,
            type="api_error",
            code="upstream_error",
            headers=headers,
            retryable=True,
        )
    code = (upstream_code or "model_not_found") if status == 404 else upstream_code
    return UpstreamHTTPError(
        message,
        status=status,
        type=_TYPE_BY_STATUS.get(status, upstream_type or "invalid_request_error"),
        code=code,
        param=param,
        headers=headers,
        retryable=retryable,
    )
