"""Vertex AI endpoints, shared by the gemini and anthropic backends: location ↔ API host.

Vertex serves each location from its own host: ``{location}-aiplatform.googleapis.com``
for a region, ``aiplatform.{us|eu}.rep.googleapis.com`` for a multi-region, and
``aiplatform.googleapis.com`` for ``global``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_REGION_HOST = re.compile(r"^([a-z0-9-]+)-aiplatform\.googleapis\.com$")
_MULTI_REGION_HOST = re.compile(r"^aiplatform\.([a-z]+)\.rep\.googleapis\.com$")


def location_of(base_url: str) -> str | None:
    """``https://us-east5-aiplatform.googleapis.com/v1`` → ``us-east5``; global and multi-region
    hosts too; None for a host that names no location."""
    host = urlsplit(base_url).hostname or ""
    if host == "aiplatform.googleapis.com":
        return "global"
    m = _REGION_HOST.match(host) or _MULTI_REGION_HOST.match(host)
    return m.group(1) if m else None


def vertex_base_url(location: str) -> str:
    """The API base URL (with ``/v1``) of a Vertex location."""
    if location == "global":
        return "https://aiplatform.googleapis.com/v1"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com/v1"
    return f"https://{location}-aiplatform.googleapis.com/v1"
