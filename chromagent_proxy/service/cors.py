"""CORS on the API routes (``cors`` in the config), through aiohttp-cors.

Only the API resources get it; the headers a browser app may read are the request id, the
backend and attempts, and the rate-limit headers.
"""

from __future__ import annotations

import re

from aiohttp import web

from chromagent_proxy.core.config import GatewayConfig

EXPOSED = (
    "x-request-id",
    "x-chromagent-backend",
    "x-chromagent-attempts",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
)


def setup_cors(app: web.Application, config: GatewayConfig, api_paths: list[str]) -> None:
    """aiohttp-cors on the API resources. It always echoes the request's Origin (never
    ``*``), which is what browsers require when credentials are allowed."""
    import aiohttp_cors

    cors = config.cors
    assert cors is not None
    origins = [cors.origin] if isinstance(cors.origin, str) else list(cors.origin)
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=cors.credentials,
        expose_headers=EXPOSED,
        allow_headers="*",
        allow_methods=["GET", "POST"],
        max_age=cors.max_age,
    )
    setup = aiohttp_cors.setup(app, defaults={o: options for o in origins})
    # A route pattern ("/v1/models/{model:.+}") as aiohttp names the resource ("/v1/models/{model}").
    wanted = {re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path) for path in api_paths}
    for resource in list(app.router.resources()):
        if resource.canonical in wanted:
            setup.add(resource)
