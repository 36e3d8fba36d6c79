"""IR events → the Responses stream grammar (and the same ``response`` object whole).

One item open at a time, indices 0, 1, 2… in the order items open; every event has a
``sequence_number``; the stream ends with exactly one terminal event
(``response.completed`` / ``response.incomplete``, or ``error`` + ``response.failed``).
Reasoning state (signed thinking, Gemini call signatures) goes out sealed in
``encrypted_content`` when the client asked for it (``include``), and always into the
stored copy of the response.
"""

from __future__ import annotations

import os
import time
from typing import Any

from chromagent_proxy.core import codec, ir
from chromagent_proxy.core.accumulate import Answer
from chromagent_proxy.core.errors import GatewayError
from chromagent_proxy.core.seal import Sealer
from chromagent_proxy.dialects.responses.request import PURPOSE, ResponsesRequest
from chromagent_proxy.dialects.responses.tools import Tools

_dumps = codec.dumps


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(12).hex()}"


def usage(u: ir.Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    details: dict[str, int] = {"cached_tokens": u.cache_read}
    if u.cache_write:
        details["cache_write_tokens"] = u.cache_write
    return {
        "input_tokens": u.prompt_total,
        "input_tokens_details": details,
        "output_tokens": u.completion_total,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.total,
    }


def error_code(err: GatewayError) -> str:
    if err.status == 429:
        return "rate_limit_exceeded"
    if err.code == "context_length_exceeded":
        return "context_length_exceeded"
    return "server_error" if err.status >= 500 else (err.code or "invalid_request_error")


class ResponseEncoder:
    """Stateful encoder for one response (stream or whole)."""

    def __init__(
        self,
        req: ResponsesRequest,
        tools: Tools,
        sealer: Sealer,
        model: str,
        response_id: str | None = None,
    ) -> None:
        self.req = req
        self.tools = tools
        self.sealer = sealer
        self.model = model
        self.id = response_id or new_id("resp")
        self.created_at = int(time.time())
        self.include_sealed = "reasoning.encrypted_content" in (req.include or ())
        self.seq = 0
        self.started = False
        self.usage: ir.Usage | None = None
        self.output: list[dict[str, Any]] = []  # items as the client sees them
        self.stored: list[dict[str, Any]] = []  # same, reasoning always sealed
        self.final: dict[str, Any] | None = None
        self.reason: str | None = None
        self._cur: dict[str, Any] | None = None
        self._kind = ""
        self._text: list[str] = []
        self._summary_open = False
        self._thinking: list[dict[str, Any]] = []  # sealed blocks of the open reasoning item
        self._origin: str | None = None
        self._calls: dict[str, str] = {}  # call_id → signature (origin below)
        self._call_origin: str | None = None
        self._buf: list[bytes] = []

    # -- framing

    def _emit(self, type_: str, **fields: Any) -> None:
        fields["type"] = type_
        fields["sequence_number"] = self.seq
        self.seq += 1
        self._buf.append(b"event: " + type_.encode() + b"\ndata: " + _dumps(fields) + b"\n\n")

    def _take(self) -> bytes:
        out = b"".join(self._buf)
        self._buf.clear()
        return out

    def snapshot(self, status: str, output: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        req = self.req
        reasoning = req.reasoning
        fmt = req.text.format if req.text and req.text.format else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "max_tool_calls": None,
            "model": self.model,
            "output": output if output is not None else [],
            "parallel_tool_calls": req.parallel_tool_calls
            if req.parallel_tool_calls is not None
            else True,
            "previous_response_id": req.previous_response_id,
            "prompt_cache_key": req.prompt_cache_key,
            "reasoning": {
                "effort": reasoning.effort if reasoning else None,
                "summary": (reasoning.summary or reasoning.generate_summary) if reasoning else None,
            },
            "safety_identifier": req.safety_identifier,
            "service_tier": req.service_tier or "default",
            "store": req.store if req.store is not None else True,
            "temperature": req.temperature if req.temperature is not None else 1.0,
            "text": {"format": codec.to_builtins(fmt) if fmt else {"type": "text"}},
            "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
            "tools": req.tools or [],
            "top_p": req.top_p if req.top_p is not None else 1.0,
            "truncation": req.truncation or "disabled",
            "usage": None,
            "user": req.user,
            "metadata": req.metadata or {},
        }

    # -- events

    def encode(self, events: list[ir.Event]) -> bytes:
        for ev in events:
            t = type(ev)
            if t is ir.Usage:
                self.usage = ev  # type: ignore[assignment]
                continue
            if t is ir.Start:
                continue
            if not self.started:
                self.started = True
                snap = self.snapshot("in_progress")
                self._emit("response.created", response=snap)
                self._emit("response.in_progress", response=snap)
            if isinstance(ev, ir.TextDelta):
                self._text_delta(ev.text)
            elif isinstance(ev, ir.ThinkingDelta):
                self._thinking_delta(ev)
            elif isinstance(ev, ir.RedactedThinkingBlock):
                self._close()
                self._open_reasoning(ev.origin)
                self._thinking.append({"r": ev.data})
                self._close()
            elif isinstance(ev, ir.ToolCallStart):
                self._close()
                name, ns = self.tools.split(ev.name)
                item: dict[str, Any] = {
                    "id": new_id("fc"),
                    "type": "function_call",
                    "status": "in_progress",
                    "arguments": "",
                    "call_id": ev.id,
                    "name": name,
                }
                if ns:
                    item["namespace"] = ns
                if ev.signature:
                    self._calls[ev.id] = ev.signature
                    self._call_origin = ev.origin
                self._open("function_call", item)
            elif isinstance(ev, ir.ToolCallDelta):
                if self._kind == "function_call" and ev.arguments:
                    assert self._cur is not None
                    self._text.append(ev.arguments)
                    self._emit(
                        "response.function_call_arguments.delta",
                        item_id=self._cur["id"],
                        output_index=len(self.output),
                        delta=ev.arguments,
                    )
            elif isinstance(ev, ir.Finish):
                if ev.reason == "length":
                    self.reason = "max_output_tokens"
                elif ev.reason in ("content_filter", "refusal"):
                    self.reason = "content_filter"
                self._close()
        return self._take()

    def _open(self, kind: str, item: dict[str, Any]) -> None:
        self._cur, self._kind, self._text = item, kind, []
        self._emit("response.output_item.added", output_index=len(self.output), item=item)

    def _text_delta(self, text: str) -> None:
        if self._kind != "message":
            self._close()
            self._open(
                "message",
                {
                    "id": new_id("msg"),
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            )
            assert self._cur is not None
            self._emit(
                "response.content_part.added",
                item_id=self._cur["id"],
                output_index=len(self.output),
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            )
        assert self._cur is not None
        self._text.append(text)
        self._emit(
            "response.output_text.delta",
            item_id=self._cur["id"],
            output_index=len(self.output),
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _open_reasoning(self, origin: str | None) -> None:
        self._thinking, self._origin, self._summary_open = [], origin, False
        self._open("reasoning", {"id": new_id("rs"), "type": "reasoning", "summary": []})

    def _thinking_delta(self, ev: ir.ThinkingDelta) -> None:
        # A signed block is whole: the next thinking opens another reasoning item.
        if self._kind != "reasoning" or (self._thinking and "s" in self._thinking[-1]):
            self._close()
            self._open_reasoning(ev.origin)
        if not self._thinking:
            self._thinking.append({"x": ""})
        block = self._thinking[-1]
        assert self._cur is not None
        if ev.text:
            if not self._summary_open:
                self._summary_open = True
                self._emit(
                    "response.reasoning_summary_part.added",
                    item_id=self._cur["id"],
                    output_index=len(self.output),
                    summary_index=0,
                    part={"type": "summary_text", "text": ""},
                )
            block["x"] += ev.text
            self._text.append(ev.text)
            self._emit(
                "response.reasoning_summary_text.delta",
                item_id=self._cur["id"],
                output_index=len(self.output),
                summary_index=0,
                delta=ev.text,
            )
        if ev.signature:
            block["s"] = ev.signature
            self._origin = ev.origin or self._origin

    def _close(self) -> None:
        item, kind = self._cur, self._kind
        if item is None:
            return
        index = len(self.output)
        text = "".join(self._text)
        status = "incomplete" if self.reason else "completed"
        stored = None
        if kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            ctx = {"item_id": item["id"], "output_index": index, "content_index": 0}
            self._emit("response.output_text.done", **ctx, text=text, logprobs=[])
            self._emit("response.content_part.done", **ctx, part=part)
            item = {**item, "status": status, "content": [part]}
        elif kind == "function_call":
            args = text
            self._emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=args,
            )
            item = {**item, "status": status, "arguments": args}
        elif kind == "reasoning":
            summary = []
            if self._summary_open:
                part = {"type": "summary_text", "text": text}
                ctx = {"item_id": item["id"], "output_index": index, "summary_index": 0}
                self._emit("response.reasoning_summary_text.done", **ctx, text=text)
                self._emit("response.reasoning_summary_part.done", **ctx, part=part)
                summary = [part]
            sealed = self._seal({"o": self._origin or "", "t": self._thinking})
            stored = {**item, "summary": summary, "encrypted_content": sealed}
            item = {**item, "summary": summary}
            if self.include_sealed:
                item["encrypted_content"] = sealed
        self._emit("response.output_item.done", output_index=index, item=item)
        self.output.append(item)
        self.stored.append(stored or item)
        self._cur, self._kind, self._text = None, "", []

    def _seal(self, value: dict[str, Any]) -> str:
        return self.sealer.seal(value, PURPOSE)

    def finish(self) -> bytes:
        if not self.started:
            self.encode([ir.TextDelta("")])
        self._close()
        if self._calls:
            # Gemini's call signatures ride in one more reasoning item (no summary), so a
            # stateless client sends them back with the calls next turn.
            sealed = self._seal({"o": self._call_origin or "", "t": [], "c": self._calls})
            item = {"id": new_id("rs"), "type": "reasoning", "summary": []}
            self._emit("response.output_item.added", output_index=len(self.output), item=item)
            stored = {**item, "encrypted_content": sealed}
            shown = stored if self.include_sealed else item
            self._emit("response.output_item.done", output_index=len(self.output), item=shown)
            self.output.append(shown)
            self.stored.append(stored)
            self._calls = {}
        status = "incomplete" if self.reason else "completed"
        final = self.snapshot(status, self.output)
        final["usage"] = usage(self.usage or ir.Usage())
        if self.reason:
            final["incomplete_details"] = {"reason": self.reason}
        else:
            final["completed_at"] = int(time.time())
        self.final = final
        self._emit(f"response.{status}", response=final)
        return self._take()

    def fail(self, err: GatewayError) -> bytes:
        """``error`` then ``response.failed`` (flat and nested error fields, §3.5d)."""
        self._cur, self._kind = None, ""
        code = error_code(err)
        self._emit(
            "error",
            code=code,
            message=err.message,
            param=err.param,
            error={"type": err.type, "code": code, "message": err.message, "param": err.param},
        )
        failed = self.snapshot("failed", self.output)
        failed["error"] = {"code": code, "message": err.message}
        self._emit("response.failed", response=failed)
        return self._take()

    def whole(self, answer: Answer) -> dict[str, Any]:
        """A non-stream answer: the same object ``response.completed`` would carry."""
        self.encode(_events_of(answer))
        self.finish()
        self._buf.clear()
        assert self.final is not None
        return self.final


def _events_of(answer: Answer) -> list[ir.Event]:
    """Answer → events again, in block order (so one state machine serves both shapes)."""
    out: list[ir.Event] = []
    choice = answer.choices.get(0)
    if choice is None:
        return out
    for kind, i in choice.order:
        if kind == "text":
            out.append(ir.TextDelta("".join(choice.texts[i])))
        elif kind == "thinking":
            b = choice.thinking[i]
            if b.redacted is not None:
                out.append(ir.RedactedThinkingBlock(b.redacted, origin=b.origin))
            else:
                out.append(ir.ThinkingDelta(b.joined, signature=b.signature, origin=b.origin))
        else:
            c = choice.calls[i]
            out.append(ir.ToolCallStart(i, c.id, c.name, signature=c.signature, origin=c.origin))
            out.append(ir.ToolCallDelta(i, c.joined))
    if choice.finish:
        out.append(ir.Finish(choice.finish))
    if answer.usage is not None:
        out.append(answer.usage)
    return out
