"""Browser drive-by and DNS-rebinding guards (``Origin`` and ``Host`` checks).

A web page can make the user's browser POST to ``http://127.0.0.1:3000`` (a
``text/plain`` POST needs no preflight), and a rebinding DNS name can make the
gateway look same-origin to a page. Browsers always send ``Origin`` on a
cross-site POST and the page's own host name in ``Host``; SDKs and curl send
no ``Origin`` and the address they dialled. So:

- a POST whose ``Origin`` is present and neither the gateway's own origin nor
  allowed by ``cors.origin`` is refused (``"*"`` allows any origin except the
  opaque ``null`` one, which must be listed explicitly);
- when the gateway listens on loopback, ``Host`` must be ``localhost``,
  ``127.0.0.1``, ``[::1]`` or the bound address (any port).

Both refusals are a 403 in OpenAI JSON.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from .config import GatewayConfig
from .errors import GatewayError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond this machine


def _host_name(value: str) -> str:
    """``Host`` without its port, lower case; IPv6 keeps its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end != -1 else value
    return value.split(":", 1)[0]


class OriginGuard:
    __slots__ = ("_any_origin", "_hosts", "_hosts_seen", "_origins")

    def __init__(self, config: GatewayConfig) -> None:
        self._hosts: frozenset[str] | None = None
        if is_loopback(config.host):
            bound = config.host.lower()
            self._hosts = LOOPBACK_NAMES | {bound, f"[{bound.strip('[]')}]"}
        self._hosts_seen: dict[str, bool] = {}
        cors = config.cors
        listed = (
            [] if cors is None else [cors.origin] if isinstance(cors.origin, str) else cors.origin
        )
        self._any_origin = "*" in listed
        self._origins = frozenset(o.rstrip("/").lower() for o in listed if o != "*")

    def _host_ok(self, host: str) -> bool:
        # Clients send the same few Host values: remember the verdicts (bounded).
        ok = self._hosts_seen.get(host)
        if ok is None:
            assert self._hosts is not None
            ok = _host_name(host) in self._hosts
            if len(self._hosts_seen) < 256:
                self._hosts_seen[host] = ok
        return ok

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self._origins:
            return True
        if origin == "null":  # sandboxed frames, file: pages: only when listed explicitly
            return False
        if self._any_origin:
            return True
        # Same origin: a page served under the address the request was sent to.
        return host is not None and origin in (f"http://{host.lower()}", f"https://{host.lower()}")

    def refusal(self, request: web.BaseRequest) -> GatewayError | None:
        """A 403 for a request from a foreign web page, or None."""
        headers = request.headers
        host = headers.get("Host")
        if self._hosts is not None and host is not None and not self._host_ok(host):
            return GatewayError(
                "The Host header names a host this gateway does not serve; it listens on "
                "loopback and accepts localhost, 127.0.0.1 and [::1] only (DNS rebinding guard)",
                status=403,
                type="invalid_request_error",
                code="host_not_allowed",
            )
        origin = headers.get("Origin")
        if (
            origin is not None
            and request.method == "POST"
            and not self.origin_allowed(origin, host)
        ):
            return GatewayError(
                "Requests from this web origin are not allowed; add it to cors.origin to "
                "let browser pages on it call the gateway",
                status=403,
                type="invalid_request_error",
                code="origin_not_allowed",
            )
        return None

    def strip_null_origin(self, response: web.StreamResponse) -> None:
        """aiohttp-cors echoes any Origin under ``"*"``, ``null`` included: take it back."""
        if response.headers.get("Access-Control-Allow-Origin") == "null" and (
            "null" not in self._origins
        ):
            del response.headers["Access-Control-Allow-Origin"]
            response.headers.popall("Access-Control-Allow-Credentials", None)
