"""The Messages dialect's error envelope and statuses, context-overflow wording, the
Anthropic model list's paging and the count_tokens cache."""

from __future__ import annotations

import json

import pytest

from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.messages import MessagesDialect
from chromagent_proxy.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    RateLimited,
    RequestTooLarge,
    upstream_http_error,
)


@pytest.mark.parametrize(
    ("err", "status", "etype"),
    [
        (InvalidRequest("bad"), 400, "invalid_request_error"),
        (AuthenticationFailed("no key"), 401, "authentication_error"),
        (upstream_http_error("b", 404, "no model"), 404, "not_found_error"),
        (RequestTooLarge("big"), 413, "request_too_large"),
        (RateLimited("slow down", headers={"Retry-After": "7"}), 429, "rate_limit_error"),
        (upstream_http_error("b", 500, "boom"), 500, "api_error"),
        (upstream_http_error("b", 529, "busy"), 529, "overloaded_error"),
        (upstream_http_error("b", 504, "slow"), 504, "timeout_error"),
        (GatewayError("bug"), 500, "api_error"),
    ],
)
def test_error_envelope(err: GatewayError, status: int, etype: str) -> None:
    d = MessagesDialect(Sealer("k"))
    got_status, body, headers = d.error_body(err)
    assert got_status == status
    assert json.loads(body) == {"type": "error", "error": {"type": etype, "message": err.message}}
    if status == 429:
        assert headers["Retry-After"] == "7"
    framed = d.stream_error(err, None)
    assert framed.startswith(b"event: error\ndata: ") and framed.endswith(b"\n\n")
    assert json.loads(framed.split(b"data: ", 1)[1])["error"]["type"] == etype


def test_context_overflow_is_worded_like_anthropic() -> None:
    err = upstream_http_error(
        "g",
        400,
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    )
    _, body, _ = MessagesDialect(Sealer("k")).error_body(err)
    assert (
        json.loads(body)["error"]["message"]
        == "prompt is too long: 1200000 tokens > 1048576 maximum"
    )


def test_anthropic_model_list_pages_like_the_sdk() -> None:
    from chromagent_proxy.dialects.messages.models import list_body, wants_anthropic_shape

    ids = [f"claude-{i}" for i in range(5)]
    page = json.loads(list_body(ids, {"limit": "2"}))
    assert [m["id"] for m in page["data"]] == ["claude-0", "claude-1"]
    assert page["has_more"] and page["first_id"] == "claude-0" and page["last_id"] == "claude-1"
    assert page["data"][0] == {
        "type": "model",
        "id": "claude-0",
        "display_name": "claude-0",
        "created_at": "1970-01-01T00:00:00Z",
    }
    rest = json.loads(list_body(ids, {"limit": "2", "after_id": "claude-3"}))
    assert [m["id"] for m in rest["data"]] == ["claude-4"] and not rest["has_more"]
    before = json.loads(list_body(ids, {"limit": "2", "before_id": "claude-3"}))
    assert [m["id"] for m in before["data"]] == ["claude-1", "claude-2"] and before["has_more"]
    with pytest.raises(InvalidRequest):
        list_body(ids, {"limit": "0"})
    assert wants_anthropic_shape({"anthropic-version": "2023-06-01"})
    assert not wants_anthropic_shape({"authorization": "Bearer x"})


def test_count_cache_expires_and_is_bounded() -> None:
    from chromagent_proxy.dialects.messages.count import CountCache

    cache = CountCache(ttl=60, size=2)
    keys = [CountCache.key("b", "m", bytes([i])) for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, str(i).encode())
    assert cache.get(keys[0]) is None and cache.get(keys[2]) == b"2"
    stale = CountCache(ttl=-1)
    stale.put(keys[0], b"x")
    assert stale.get(keys[0]) is None
