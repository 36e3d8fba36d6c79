"""The error tree GatewayClient raises, shaped like the official SDK's.

Each error carries the OpenAI error's ``message``, ``type``, ``code`` and
``param``; HTTP errors also carry ``status``, ``headers`` and ``request_id``.
``chromagent_proxy.client`` re-exports every class here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDict

from chromagent_proxy.core import codec


class APIError(Exception):
    """Any failure; ``status`` is None when no HTTP status applies (connection, mid-stream)."""

    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        if status is not None:
            self.status = status
        self.body = body


class APIConnectionError(APIError):
    pass


class APITimeoutError(APIConnectionError):
    pass


class APIStatusError(APIError):
    status: int

    def __init__(
        self, message: str, *, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> None:
        super().__init__(message, **kw)
        # Case-insensitive, like HTTP header names.
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        self.request_id = self.headers.get("x-request-id")

    @property
    def status_code(self) -> int:
        return self.status


class BadRequestError(APIStatusError):
    status = 400


class AuthenticationError(APIStatusError):
    status = 401


class PermissionDeniedError(APIStatusError):
    status = 403


class NotFoundError(APIStatusError):
    status = 404


class ConflictError(APIStatusError):
    status = 409


class RequestTooLargeError(APIStatusError):
    status = 413


class UnprocessableEntityError(APIStatusError):
    status = 422


class RateLimitError(APIStatusError):
    status = 429


class InternalServerError(APIStatusError):
    pass


_BY_STATUS: dict[int, type[APIStatusError]] = {
    cls.status: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RequestTooLargeError,
        UnprocessableEntityError,
        RateLimitError,
    )
}


def error_fields(data: Any) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) of an OpenAI error body (or of anything else)."""
    err = data.get("error", data) if isinstance(data, dict) else data
    if not isinstance(err, dict):
        return str(err), None, None, None

    def s(key: str) -> str | None:
        v = err.get(key)
        return v if isinstance(v, str) else None

    return s("message") or str(err), s("type"), s("code"), s("param")


def status_error(status: int, body: bytes, headers: Mapping[str, str]) -> APIStatusError:
    """The APIStatusError subclass for an HTTP error response."""
    try:
        data: Any = codec.loads(body)
    except ValueError:
        data = body.decode("utf-8", "replace")
    message, etype, code, param = error_fields(data)
    cls = _BY_STATUS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return cls(
        message, type=etype, code=code, param=param, status=status, body=data, headers=headers
    )
