"""IR events → the Messages stream grammar (messages-api-ingress.md §4.2), and whole answers
→ the Message JSON.

    message_start (input usage) · per block: content_block_start, content_block_delta*,
    content_block_stop · message_delta (stop_reason, cumulative usage) · message_stop

Blocks never overlap, indexes count up from 0. Every event carries its ``event:`` line (the
SDKs dispatch on it). Thinking from a non-Anthropic backend gets a gateway-made signature
(signing.py) that carries the backend's own state — its thinking signature and the
signatures of the tool calls that follow — so the next turn can restore it; a tool call
with a signature and no thinking block before it gets an empty thinking block to carry it.
"""

from __future__ import annotations

from typing import Any

from ... import codec
from ...core import ir
from ...core.accumulate import Answer
from .signing import Sealed, Signer

STOP_REASON: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
    "stop_sequence": "stop_sequence",
    "error": "end_turn",
}

_dumps = codec.dumps


def event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _dumps(payload) + b"\n\n"


def usage_dict(u: ir.Usage | None) -> dict[str, int]:
    """All four numbers, always (Claude Code sums the input three for its context meter);
    thinking counts as output, as Anthropic counts it."""
    u = u or ir.Usage()
    return {
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cache_read,
        "output_tokens": u.output + u.reasoning,
    }


def stop_reason(reason: ir.FinishReason | None, had_calls: bool) -> str:
    if had_calls and reason in (None, "stop", "tool_calls"):
        return "tool_use"
    return STOP_REASON.get(reason or "stop", "end_turn")


def message_shell(id: str, model: str, usage: ir.Usage | None) -> dict[str, Any]:
    return {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage_dict(usage),
    }


class StreamEncoder:
    __slots__ = (
        "_calls",
        "_id",
        "_index",
        "_model",
        "_open",
        "_origin",
        "_sealed",
        "_signer",
        "_started",
        "_stop",
        "_stop_seq",
        "usage",
    )

    def __init__(self, id: str, model: str, signer: Signer) -> None:
        self._id = id
        self._model = model
        self._signer = signer
        self.usage: ir.Usage | None = None
        self._started = False
        self._index = -1  # index of the last block started
        self._open = ""  # "text" | "thinking" | "tool" | ""
        self._sealed: Sealed | None = None  # the open thinking block's state (not Anthropic's)
        self._origin = ""  # the open thinking block's origin
        self._calls: dict[int, int] = {}  # IR tool call index → block index
        self._stop: ir.FinishReason | None = None
        self._stop_seq: str | None = None

    # -- blocks

    def _start(self, out: list[bytes], block: dict[str, Any], kind: str) -> None:
        self._close(out)
        self._index += 1
        self._open = kind
        out.append(
            event(
                b"content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )

    def _delta(self, out: list[bytes], delta: dict[str, Any]) -> None:
        out.append(
            event(
                b"content_block_delta",
                {"type": "content_block_delta", "index": self._index, "delta": delta},
            )
        )

    def _close(self, out: list[bytes]) -> None:
        if not self._open:
            return
        if self._open == "thinking" and self._sealed is not None:
            self._delta(
                out, {"type": "signature_delta", "signature": self._signer.seal(self._sealed)}
            )
        self._sealed = None
        self._open = ""
        out.append(
            event(b"content_block_stop", {"type": "content_block_stop", "index": self._index})
        )

    def _thinking(self, out: list[bytes], ev: ir.ThinkingDelta) -> None:
        origin = ev.origin or "unknown"
        if self._open != "thinking" or not self._adopt(origin):
            self._start(out, {"type": "thinking", "thinking": "", "signature": ""}, "thinking")
            self._origin = origin
            self._sealed = None if origin == "anthropic" else Sealed(origin)
        if ev.text:
            self._delta(out, {"type": "thinking_delta", "thinking": ev.text})
        if ev.signature:
            if self._sealed is None:  # Anthropic's own: passed as it is
                self._delta(out, {"type": "signature_delta", "signature": ev.signature})
            else:
                self._sealed.signature = ev.signature

    def _adopt(self, origin: str) -> bool:
        """May the open thinking block carry state of ``origin``? Thought text often comes
        without an origin (only the part with the signature names it): an "unknown" block
        takes the first origin that arrives."""
        if origin == self._origin or origin == "unknown":
            return True
        if self._origin == "unknown" and self._sealed is not None and origin != "anthropic":
            self._origin = self._sealed.origin = origin
            return True
        return False

    def _tool_start(self, out: list[bytes], ev: ir.ToolCallStart) -> None:
        if ev.signature and ev.origin != "anthropic":
            origin = ev.origin or "unknown"
            if self._open != "thinking" or self._sealed is None or not self._adopt(origin):
                self._start(out, {"type": "thinking", "thinking": "", "signature": ""}, "thinking")
                self._origin = origin
                self._sealed = Sealed(origin)
            assert self._sealed is not None
            self._sealed.calls[ev.id] = ev.signature
        block = {"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}}
        self._start(out, block, "tool")
        self._calls[ev.index] = self._index

    # -- the EventEncoder protocol

    def encode(self, events: list[ir.Event]) -> bytes:
        out: list[bytes] = []
        if not self._started:
            self._started = True
            for ev in events:
                if isinstance(ev, ir.Usage):
                    self.usage = ev
                elif isinstance(ev, ir.Start) and ev.model:
                    self._model = ev.model
            shell = message_shell(self._id, self._model, self.usage)
            out.append(event(b"message_start", {"type": "message_start", "message": shell}))
        for ev in events:
            if isinstance(ev, ir.TextDelta):
                if self._open != "text":
                    self._start(out, {"type": "text", "text": ""}, "text")
                if ev.text:
                    self._delta(out, {"type": "text_delta", "text": ev.text})
            elif isinstance(ev, ir.ThinkingDelta):
                self._thinking(out, ev)
            elif isinstance(ev, ir.ToolCallDelta):
                if self._open == "tool" and self._calls.get(ev.index) == self._index:
                    self._delta(out, {"type": "input_json_delta", "partial_json": ev.arguments})
            elif isinstance(ev, ir.ToolCallStart):
                self._tool_start(out, ev)
            elif isinstance(ev, ir.RedactedThinkingBlock):
                self._start(out, {"type": "redacted_thinking", "data": ev.data}, "redacted")
                self._close(out)
            elif isinstance(ev, ir.Finish):
                self._close(out)
                self._stop = ev.reason
                self._stop_seq = ev.stop_sequence
            elif isinstance(ev, ir.Usage):
                self.usage = ev
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self.encode([]))
        self._close(out)
        reason = stop_reason(self._stop, bool(self._calls))
        delta = {
            "type": "message_delta",
            "delta": {
                "stop_reason": reason,
                "stop_sequence": self._stop_seq if reason == "stop_sequence" else None,
            },
            "usage": usage_dict(self.usage),
        }
        out.append(event(b"message_delta", delta))
        out.append(event(b"message_stop", {"type": "message_stop"}))
        return b"".join(out)


def message(answer: Answer, id: str, model: str, signer: Signer) -> dict[str, Any]:
    """A whole answer as the Message JSON (choice 0; Messages has one answer)."""
    msg = message_shell(id, answer.model or model, answer.usage)
    content: list[dict[str, Any]] = msg["content"]
    c = answer.choices.get(0)
    if c is None:
        msg["stop_reason"] = "end_turn"
        return msg
    sealed: dict[int, Sealed] = {}  # content index of a thinking block → its state

    def thinking_block(text: str, origin: str | None, signature: str | None) -> None:
        if origin == "anthropic" and signature:
            content.append({"type": "thinking", "thinking": text, "signature": signature})
            return
        sealed[len(content)] = Sealed(origin or "unknown", signature)
        content.append({"type": "thinking", "thinking": text, "signature": ""})

    for kind, i in c.order:
        if kind == "text":
            content.append({"type": "text", "text": "".join(c.texts[i])})
        elif kind == "thinking":
            b = c.thinking[i]
            if b.redacted is not None:
                content.append({"type": "redacted_thinking", "data": b.redacted})
            else:
                thinking_block(b.joined, b.origin, b.signature)
        else:
            call = c.calls[i]
            if call.signature and call.origin != "anthropic":
                origin = call.origin or "unknown"
                prev = sealed.get(len(content) - 1)
                if prev is not None and prev.origin == "unknown":
                    prev.origin = origin  # thought text without an origin, then the signed call
                if prev is None or prev.origin != origin:
                    thinking_block("", call.origin, None)
                    prev = sealed[len(content) - 1]
                prev.calls[call.id] = call.signature
            args = call.joined.strip()
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": codec.loads(args) if args else {},
                }
            )
    for k, s in sealed.items():
        content[k]["signature"] = signer.seal(s)
    reason = stop_reason(c.finish, bool(c.calls))
    msg["stop_reason"] = reason
    msg["stop_sequence"] = c.stop_sequence if reason == "stop_sequence" else None
    return msg
