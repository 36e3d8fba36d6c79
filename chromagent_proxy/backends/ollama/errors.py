"""Ollama's error envelope in one place: ``{"error": "<text>"}`` on an HTTP error (a 404
from /api/chat means the model is not pulled) and as a line inside a 200 stream."""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDictProxy

from ... import codec
from ...errors import GatewayError, UpstreamHTTPError, upstream_http_error
from ...upstream import ErrorParser


def error_of(backend_id: str, error: object) -> UpstreamHTTPError:
    message = error if isinstance(error, str) else codec.dumps(error).decode()
    return UpstreamHTTPError(
        f"backend '{backend_id}' reported an error mid-stream: {message}", retryable=False
    )


def error_parser(model: str) -> ErrorParser:
    """Ollama errors are ``{"error": "<text>"}``; a 404 from /api/chat means the model is not pulled."""

    def parse(
        backend_id: str, status: int, body: bytes, headers: CIMultiDictProxy[str]
    ) -> GatewayError:
        message = _error_text(body)
        if status == 404:
            if message is None:
                # Not Ollama's JSON: something else answers at this URL.
                return UpstreamHTTPError(
                    f"backend '{backend_id}' has no Ollama /api/chat at its baseUrl (HTTP 404); "
                    "baseUrl must be the Ollama server root, e.g. http://localhost:11434",
                    retryable=False,
                )
            return UpstreamHTTPError(
                f"model '{model}' is not available on backend '{backend_id}' ({message}); "
                f"pull it with `ollama pull {model}`",
                status=404,
                type="invalid_request_error",
                code="model_not_found",
                param="model",
                retryable=False,
            )
        text = message if message is not None else body[:500].decode("utf-8", "replace").strip()
        err = upstream_http_error(
            backend_id,
            status,
            text or f"upstream returned HTTP {status}",
            retry_after=headers.get("Retry-After"),
        )
        if status == 400 and "does not support tools" in text:
            err.param = "tools"
        return err

    return parse


def _error_text(body: bytes) -> str | None:
    try:
        data: Any = codec.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and "error" in data:
        err = data["error"]
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return None
