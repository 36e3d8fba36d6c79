"""Tool call ids that carry a backend's signature (Gemini's ``thoughtSignature``)
through a Chat Completions client.

A Chat Completions client keeps exactly one thing of a tool call it sends back
unchanged: the ``id`` (it must, to pair it with the tool result), whatever library
rebuilt the message. So the signature rides inside the id:

    call_<random>__thought__<signature, URL-safe base64 without padding>

URL-safe so the id stays within ``[A-Za-z0-9_-]`` (what Anthropic and other
providers accept if a conversation moves on to another backend). The same
separator is used by LiteLLM, so ids from either gateway are understood.
"""

from __future__ import annotations

SEPARATOR = "__thought__"


def join_tool_call_id(plain: str, signature: str | None) -> str:
    if not signature:
        return plain
    return plain + SEPARATOR + signature.replace("+", "-").replace("/", "_").rstrip("=")


def split_tool_call_id(call_id: str) -> tuple[str, str | None]:
    """(plain id, signature as the backend sent it or None)."""
    base, sep, sig = call_id.partition(SEPARATOR)
    if not sep or not sig:
        return call_id, None
    sig = sig.replace("-", "+").replace("_", "/")
    return base, sig + "=" * (-len(sig) % 4)
