"""``GET /v1/models`` in Anthropic's list shape (when the request carries
``anthropic-version`` or ``x-api-key``), and ``GET /v1/models/{id}``'s ModelInfo.

Pagination as the SDK pages: ``limit`` (1–1000, default 20), ``after_id`` / ``before_id``.
Claude Code's gateway model discovery keeps ids that start with ``claude`` or
``anthropic``: map Claude names in ``modelMapping`` to expose a route in its picker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ... import codec
from ...errors import InvalidRequest

EPOCH = "1970-01-01T00:00:00Z"


def wants_anthropic_shape(headers: Mapping[str, str]) -> bool:
    return "anthropic-version" in headers or "x-api-key" in headers


def model_info(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": EPOCH}


def list_body(models: list[str], query: Mapping[str, str]) -> bytes:
    raw_limit = query.get("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000", param="limit")
    ids = list(models)
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and after in ids:
        ids = ids[ids.index(after) + 1 :]
    if before is not None and before in ids:
        ids = ids[: ids.index(before)]
        page = ids[-limit:]
        has_more = len(ids) > limit
    else:
        page = ids[:limit]
        has_more = len(ids) > limit
    return codec.dumps(
        {
            "data": [model_info(m) for m in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
    )
