"""Fold IR stream events into whole answers: what every dialect's non-stream encoder
builds its response from (a non-stream upstream answer is turned into the same
events first, so there is one translation per backend, not two)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chromagent_proxy.core import ir


@dataclass(slots=True)
class ThinkingBlock:
    text: list[str] = field(default_factory=list)
    signature: str | None = None
    origin: str | None = None
    redacted: str | None = None  # data of a redacted block

    @property
    def joined(self) -> str:
        return "".join(self.text)


@dataclass(slots=True)
class Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)
    signature: str | None = None
    origin: str | None = None

    @property
    def joined(self) -> str:
        return "".join(self.arguments)


@dataclass(slots=True)
class Choice:
    """One answer, its blocks in the order they came: ``order`` holds ("text", i),
    ("thinking", i) or ("call", i) so dialects that keep block order (Messages,
    Responses) can rebuild it; Chat Completions joins text and lists calls."""

    text: list[str] = field(default_factory=list)
    texts: list[list[str]] = field(default_factory=list)
    thinking: list[ThinkingBlock] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    order: list[tuple[str, int]] = field(default_factory=list)
    finish: ir.FinishReason | None = None
    stop_sequence: str | None = None
    _open: str = ""  # kind of the block being filled

    @property
    def content(self) -> str:
        return "".join(self.text)


@dataclass(slots=True)
class Answer:
    choices: dict[int, Choice] = field(default_factory=dict)
    usage: ir.Usage | None = None
    model: str | None = None
    id: str | None = None
    error: ir.Error | None = None

    def choice(self, index: int) -> Choice:
        c = self.choices.get(index)
        if c is None:
            c = self.choices[index] = Choice()
        return c

    def add(self, events: list[ir.Event]) -> None:
        for ev in events:
            self.add_one(ev)

    def add_one(self, ev: ir.Event) -> None:
        if isinstance(ev, ir.TextDelta):
            c = self.choice(ev.choice)
            if c._open != "text":
                c._open = "text"
                c.order.append(("text", len(c.texts)))
                c.texts.append([])
            c.texts[-1].append(ev.text)
            c.text.append(ev.text)
        elif isinstance(ev, ir.ThinkingDelta):
            c = self.choice(ev.choice)
            if c._open != "thinking":
                c._open = "thinking"
                c.order.append(("thinking", len(c.thinking)))
                c.thinking.append(ThinkingBlock(origin=ev.origin))
            block = c.thinking[-1]
            if ev.text:
                block.text.append(ev.text)
            if ev.signature:
                block.signature = ev.signature
                block.origin = ev.origin or block.origin
                c._open = ""  # a signature closes the block
        elif isinstance(ev, ir.RedactedThinkingBlock):
            c = self.choice(ev.choice)
            c._open = ""
            c.order.append(("thinking", len(c.thinking)))
            c.thinking.append(ThinkingBlock(redacted=ev.data, origin=ev.origin))
        elif isinstance(ev, ir.ToolCallStart):
            c = self.choice(ev.choice)
            c._open = "call"
            c.order.append(("call", len(c.calls)))
            c.calls.append(Call(ev.id, ev.name, signature=ev.signature, origin=ev.origin))
        elif isinstance(ev, ir.ToolCallDelta):
            c = self.choice(ev.choice)
            if 0 <= ev.index < len(c.calls):
                c.calls[ev.index].arguments.append(ev.arguments)
        elif isinstance(ev, ir.Finish):
            c = self.choice(ev.choice)
            c.finish = ev.reason
            c.stop_sequence = ev.stop_sequence
        elif isinstance(ev, ir.Usage):
            self.usage = ev
        elif isinstance(ev, ir.Start):
            self.model = ev.model or self.model
            self.id = ev.id or self.id
        elif isinstance(ev, ir.Error):
            self.error = ev
