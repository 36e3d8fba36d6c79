"""Gateway-made thinking signatures: how a non-Anthropic backend's state (Gemini thought
signatures, on thinking and on function calls) survives a round trip through a Messages
client.

A Messages client keeps a ``thinking`` block's ``signature`` opaque and sends it back
byte for byte next turn (Claude Code does). The gateway puts its own sealed value there:

    cgw1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, "cgw1." + payload)[:16])>

payload = ``{"o": origin, "s": thinking signature or null, "c": [[tool call id, signature], …]}``.

The key is ``GATEWAY_SIGNING_KEY`` (any string; set the same value on every worker and
every gateway of a fleet) or, without it, 32 random bytes made at start — then signatures
do not survive a restart and are not shared between workers (the backend then runs without
its restored state). A sealed value that fails the MAC (forged, or from another gateway) is
dropped, never forwarded; a signature without the prefix is Anthropic's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field

from ... import codec

PREFIX = "cgw1."
ENV = "GATEWAY_SIGNING_KEY"
_MAC_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(slots=True)
class Sealed:
    """What a gateway-made signature carries."""

    origin: str
    signature: str | None = None
    calls: dict[str, str] = field(default_factory=dict)  # tool call id → its signature


class Signer:
    def __init__(self, key: bytes | None = None) -> None:
        if key is None:
            env = os.environ.get(ENV)
            key = env.encode() if env else os.urandom(32)
        self._key = key

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, (PREFIX + payload).encode(), hashlib.sha256).digest()
        return _b64(digest[:_MAC_BYTES])

    def seal(self, sealed: Sealed) -> str:
        body: dict[str, object] = {"o": sealed.origin, "s": sealed.signature}
        if sealed.calls:
            body["c"] = [[k, v] for k, v in sealed.calls.items()]
        payload = _b64(codec.dumps(body))
        return f"{PREFIX}{payload}.{self._mac(payload)}"

    def open(self, signature: str) -> Sealed | None:
        """The payload of a gateway-made signature, or None when it is not genuine."""
        if not signature.startswith(PREFIX):
            return None
        payload, dot, mac = signature[len(PREFIX) :].partition(".")
        if not dot or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = codec.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("o"), str):
            return None
        sig = data.get("s")
        calls: dict[str, str] = {}
        for item in data.get("c") or ():
            if isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item):
                calls[item[0]] = item[1]
        return Sealed(data["o"], sig if isinstance(sig, str) else None, calls)


def is_gateway_made(signature: str | None) -> bool:
    return bool(signature) and signature.startswith(PREFIX)  # type: ignore[union-attr]
