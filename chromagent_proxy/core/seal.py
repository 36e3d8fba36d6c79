"""Sealing state the gateway hands to clients and takes back (reasoning state: Gemini
thought signatures and Anthropic signed thinking carried in Responses
``encrypted_content``, gateway-made thinking signatures in Messages).

AES-GCM with a key derived from the gateway's ``stateSecret``: a client can neither
read the sealed state nor forge or alter it; a blob sealed by another gateway (another
secret) or for another purpose (the ``purpose`` is authenticated data) does not open,
and callers drop it instead of failing the request.

Without ``stateSecret`` each gateway process makes a random one at start: state then
round-trips only through the process that sealed it, so set ``stateSecret`` (or
``GATEWAY_STATE_SECRET``) when several workers or replicas serve one client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chromagent_proxy.core import codec

PREFIX = "cgs1_"  # version tag: lets a later format coexist
_NONCE = 12


class Sealer:
    __slots__ = ("_aead",)

    def __init__(self, secret: str | bytes | None = None) -> None:
        if secret is None or secret == "":
            raw = os.urandom(32)
        else:
            raw = secret.encode() if isinstance(secret, str) else secret
        # One fixed-length key from any secret (a passphrase or random bytes).
        key = hashlib.sha256(b"chromagent-proxy state v1\x00" + raw).digest()
        self._aead = AESGCM(key)

    def seal(self, value: Any, purpose: str) -> str:
        nonce = os.urandom(_NONCE)
        data = self._aead.encrypt(nonce, codec.dumps(value), purpose.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + data).decode().rstrip("=")

    def open(self, token: str | None, purpose: str) -> Any | None:
        """The sealed value, or None for anything that is not a valid blob of ours."""
        if not token or not token.startswith(PREFIX):
            return None
        body = token[len(PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= _NONCE:
            return None
        try:
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], purpose.encode())
        except InvalidTag:
            return None
        try:
            return codec.loads(plain)
        except ValueError:
            return None
