"""Gateway-made thinking signatures: how a non-Anthropic backend's state (Gemini thought
signatures, on thinking and on function calls) survives a round trip through a Messages
client.

A Messages client keeps a ``thinking`` block's ``signature`` opaque and sends it back
byte for byte next turn (Claude Code does). The gateway puts its own sealed value there
(core/seal.py: AES-GCM under ``stateSecret``, purpose ``messages.thinking``):

    cgs1_<sealed {"o": origin, "s": thinking signature or null, "c": [[tool call id, signature], …]}>

A value that does not open (forged, altered, or sealed by a gateway with another
``stateSecret``) is dropped, never forwarded; a signature without the prefix is
Anthropic's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.seal import PREFIX, Sealer

PURPOSE = "messages.thinking"


@dataclass(slots=True)
class Sealed:
    """What a gateway-made signature carries."""

    origin: str
    signature: str | None = None
    calls: dict[str, str] = field(default_factory=dict)  # tool call id → its signature


class Signer:
    def __init__(self, sealer: Sealer | None = None) -> None:
        self._sealer = sealer or Sealer()

    def seal(self, sealed: Sealed) -> str:
        body: dict[str, object] = {"o": sealed.origin, "s": sealed.signature}
        if sealed.calls:
            body["c"] = [[k, v] for k, v in sealed.calls.items()]
        return self._sealer.seal(body, PURPOSE)

    def open(self, signature: str) -> Sealed | None:
        """The payload of a gateway-made signature, or None when it is not genuine."""
        data = self._sealer.open(signature, PURPOSE)
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
