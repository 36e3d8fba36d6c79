"""GatewayError → Anthropic's error envelope and statuses (messages-api-ingress.md §7):

    {"type":"error","error":{"type":…,"message":…}}

400 invalid_request_error, 401 authentication_error, 403 permission_error, 404
not_found_error, 413 request_too_large, 429 rate_limit_error (+ retry-after), 500
api_error (gateway faults and upstream failures the gateway reports as 502), 504
timeout_error, 529 overloaded_error (upstream overloaded / 503). A context overflow
from any upstream is reworded as Anthropic words it ("prompt is too long: N tokens > M
maximum"), which Claude Code recognises to compact the conversation.
"""

from __future__ import annotations

import re

from ... import codec
from ...errors import GatewayError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# (tokens used, limit) out of the upstreams' context-overflow messages.
_OVERFLOW = (
    # Gemini: "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    re.compile(
        r"input token count \((\d+)\) exceeds the maximum number of tokens allowed \((\d+)\)"
    ),
    # OpenAI-compatible: "maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens"
    re.compile(r"maximum context length is (\d+) tokens.*?resulted in (\d+) tokens", re.S),
    # Anthropic's own wording (already right)
    re.compile(r"prompt is too long: (\d+) tokens > (\d+)"),
)


def _overflow(message: str) -> str | None:
    for k, rx in enumerate(_OVERFLOW):
        m = rx.search(message)
        if m:
            used, limit = (m.group(2), m.group(1)) if k == 1 else (m.group(1), m.group(2))
            return f"prompt is too long: {used} tokens > {limit} maximum"
    return None


def status_and_type(err: GatewayError) -> tuple[int, str]:
    status = err.status
    if status in (503, 529) or err.type == "overloaded_error":
        return 529, "overloaded_error"
    if status == 504:
        return 504, "timeout_error"
    if status >= 500:
        return 500, "api_error"
    if status in _TYPES:
        return status, _TYPES[status]
    return status, "invalid_request_error"


def error_payload(err: GatewayError) -> tuple[int, dict[str, object]]:
    status, etype = status_and_type(err)
    message = err.message
    if status == 400:
        message = _overflow(message) or message
    return status, {"type": "error", "error": {"type": etype, "message": message}}


def error_body(err: GatewayError) -> tuple[int, bytes, dict[str, str]]:
    status, payload = error_payload(err)
    headers = dict(err.headers)
    if status in (429, 529) and not any(k.lower() == "retry-after" for k in headers):
        headers["Retry-After"] = "1" if status == 529 else "5"
    headers.pop("WWW-Authenticate", None)  # an x-api-key dialect: no Bearer challenge
    return status, codec.dumps(payload), headers


def stream_error(err: GatewayError) -> bytes:
    _, payload = error_payload(err)
    return b"event: error\ndata: " + codec.dumps(payload) + b"\n\n"
