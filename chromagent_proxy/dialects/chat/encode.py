"""IR events → Chat Completions: ``chat.completion.chunk``s for streams (all chunks of
one upstream read framed into one buffer, so the handler writes once), and a whole
``chat.completion`` for non-stream answers (folded by core/accumulate.py).
"""

from __future__ import annotations

from ... import codec
from ...core import ir
from ...core.accumulate import Answer
from ...schema.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FunctionCall,
    FunctionDelta,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .ids import join_tool_call_id

FINISH: dict[str, str] = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
    "error": "stop",
}

_encode = codec.encode
_dumps = codec.dumps
_TEXT_SUFFIX = b'},"finish_reason":null,"logprobs":null}]}\n\n'


def usage(u: ir.Usage) -> Usage:
    """OpenAI's totals from the disjoint IR counts (prompt includes cache; completion
    includes reasoning), with the details that say how they split."""
    prompt, completion = u.prompt_total, u.completion_total
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=u.cache_read, cache_creation_tokens=u.cache_write or None
        )
        if u.cache_read or u.cache_write
        else None,
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=u.reasoning)
        if u.reasoning
        else None,
    )


class _Thinking:
    __slots__ = ("index", "text")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []


class StreamEncoder:
    """Stateful: knows which choices have started and each thinking block's text."""

    __slots__ = (
        "_blocks",
        "_created",
        "_id",
        "_model",
        "_prefixes",
        "_started",
        "_thinking",
        "include_usage",
        "usage",
    )

    def __init__(self, id: str, created: int, model: str, include_usage: bool) -> None:
        self._id = id
        self._created = created
        self._model = model
        self.include_usage = include_usage
        self.usage: ir.Usage | None = None
        self._started: set[int] = set()
        self._thinking: dict[int, _Thinking] = {}  # open thinking block per choice
        self._blocks = 0  # thinking_blocks index (signed blocks the client may replay)
        self._prefixes: dict[int, bytes] = {}

    def _chunk(self, choice: int, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            self._id, self._created, self._model, [ChunkChoice(choice, delta, finish)]
        )

    def chunks(self, events: list[ir.Event]) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
        for ev in events:
            self._one(ev, out)
        return out

    def _one(self, ev: ir.Event, out: list[ChatCompletionChunk]) -> None:
        if isinstance(ev, ir.Usage):
            self.usage = ev
            return
        if isinstance(ev, ir.Start):
            if ev.model and ev.model != self._model:
                self._model = ev.model
                self._prefixes.clear()
            return
        if isinstance(ev, ir.Error):
            return  # the request path turns it into the error event
        choice = ev.choice
        if choice not in self._started:
            self._started.add(choice)
            out.append(self._chunk(choice, Delta(role="assistant", content="")))
        if isinstance(ev, ir.TextDelta):
            out.append(self._chunk(choice, Delta(content=ev.text)))
        elif isinstance(ev, ir.ThinkingDelta):
            out.extend(self._thinking_delta(ev))
        elif isinstance(ev, ir.ToolCallDelta):
            prev = out[-1].choices[0].delta.tool_calls if out else None
            if prev and prev[0].index == ev.index and prev[0].function is not None:
                # Arguments right behind their call's start: one chunk, like Gemini sends.
                fn = prev[0].function
                fn.arguments = (fn.arguments or "") + ev.arguments
            else:
                call = ToolCallDelta(ev.index, function=FunctionDelta(arguments=ev.arguments))
                out.append(self._chunk(choice, Delta(tool_calls=[call])))
        elif isinstance(ev, ir.ToolCallStart):
            call = ToolCallDelta(
                ev.index,
                join_tool_call_id(ev.id, ev.signature),
                "function",
                FunctionDelta(ev.name, ""),
            )
            out.append(self._chunk(choice, Delta(tool_calls=[call])))
        elif isinstance(ev, ir.RedactedThinkingBlock):
            entry = {"index": self._blocks, "type": "redacted_thinking", "data": ev.data}
            self._blocks += 1
            out.append(self._chunk(choice, Delta(thinking_blocks=[entry])))
        elif isinstance(ev, ir.Finish):
            self._thinking.pop(choice, None)
            out.append(self._chunk(choice, Delta(), FINISH.get(ev.reason, "stop")))

    def _prefix(self, choice: int) -> bytes:
        """The bytes of a text-delta chunk before its text (what msgspec would write)."""
        p = self._prefixes.get(choice)
        if p is None:
            p = self._prefixes[choice] = (
                b'data: {"object":"chat.completion.chunk","id":'
                + _dumps(self._id)
                + b',"created":'
                + str(self._created).encode()
                + b',"model":'
                + _dumps(self._model)
                + b',"choices":[{"index":'
                + str(choice).encode()
                + b',"delta":{"content":'
            )
        return p

    def _thinking_delta(self, ev: ir.ThinkingDelta) -> list[ChatCompletionChunk]:
        out: list[ChatCompletionChunk] = []
        block = self._thinking.get(ev.choice)
        if block is None:
            block = self._thinking[ev.choice] = _Thinking(self._blocks)
        if ev.text:
            block.text.append(ev.text)
            out.append(self._chunk(ev.choice, Delta(reasoning_content=ev.text)))
        if ev.signature:
            # The whole signed block once, so a client can send it back to replay it.
            del self._thinking[ev.choice]
            self._blocks += 1
            entry = {
                "index": block.index,
                "type": "thinking",
                "thinking": "".join(block.text),
                "signature": ev.signature,
            }
            out.append(self._chunk(ev.choice, Delta(thinking_blocks=[entry])))
        return out

    def encode(self, events: list[ir.Event]) -> bytes:
        """The SSE bytes for these events: one buffer, one write. A text delta of a choice
        that has started (the bulk of a stream) is written from cached bytes around the
        text, without building a chunk object (bench/README.md, translated streams)."""
        buf: list[bytes] = []
        pending: list[ChatCompletionChunk] = []
        started = self._started
        for ev in events:
            if type(ev) is ir.TextDelta and ev.choice in started:
                if pending:
                    buf.extend([b"data: " + _encode(c) + b"\n\n" for c in pending])
                    pending.clear()
                buf.append(self._prefix(ev.choice) + _dumps(ev.text) + _TEXT_SUFFIX)
            else:
                self._one(ev, pending)
        if pending:
            buf.extend([b"data: " + _encode(c) + b"\n\n" for c in pending])
        return b"".join(buf)

    def finish(self) -> bytes:
        """The usage chunk, when the client asked for it (stream_options.include_usage)."""
        if not self.include_usage:
            return b""
        u = self.usage or ir.Usage()
        chunk = ChatCompletionChunk(self._id, self._created, self._model, [], usage(u))
        return b"data: " + _encode(chunk) + b"\n\n"


def completion(answer: Answer, id: str, created: int, model: str) -> ChatCompletion:
    """A whole answer as a ``chat.completion``."""
    choices: list[Choice] = []
    for index in sorted(answer.choices):
        c = answer.choices[index]
        calls = [
            ToolCall(join_tool_call_id(k.id, k.signature), FunctionCall(k.name, k.joined or "{}"))
            for k in c.calls
        ]
        reasoning = "".join(b.joined for b in c.thinking if b.redacted is None)
        blocks = [
            {"index": i, "type": "thinking", "thinking": b.joined, "signature": b.signature}
            if b.redacted is None
            else {"index": i, "type": "redacted_thinking", "data": b.redacted}
            for i, b in enumerate(b for b in c.thinking if b.signature or b.redacted)
        ]
        message = ResponseMessage(
            "assistant",
            c.content if c.text or not calls else None,
            tool_calls=calls or None,
            reasoning_content=reasoning or None,
            thinking_blocks=blocks or None,
        )
        choices.append(Choice(index, message, FINISH.get(c.finish or "stop", "stop")))
    return ChatCompletion(
        id,
        created,
        answer.model or model,
        choices,
        usage(answer.usage or ir.Usage()),
    )
