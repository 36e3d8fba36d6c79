"""An access line whose client-chosen text is not valid UTF-8 (a header's bytes reach Python
as lone surrogates) is written, readable, on one line: it never fails the request."""

from __future__ import annotations

import io
import json

import pytest

from chromagent_proxy.ops.accesslog import AccessLine, BatchedStreamHandler


def _line(path: str) -> AccessLine:
    return AccessLine(
        time="2026-12-08T00:00:00.000Z",
        request_id="r1",
        client_ip="127.0.0.1",
        method="POST",
        path=path,
        status=200,
        backend="mock",
        model="m",
        stream=False,
        latency_ms=1.0,
        ttft_ms=None,
        tokens_in=1,
        tokens_out=2,
        attempts=1,
        session_id="caf\udce9",
    )


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_lone_surrogates_are_written_escaped(fmt: str) -> None:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    handler = BatchedStreamHandler(out, fmt)  # type: ignore[arg-type]
    handler.append_line(_line("/v1/ok"))
    handler.append_line(_line("/v1/caf\udce9\ud800"))
    handler.append_line(_line("/v1/next"))
    text = bytes(handler.buffer).decode("utf-8")  # valid UTF-8 throughout
    lines = text.splitlines()
    assert len(lines) == 3
    assert "/v1/next" in lines[2]
    if fmt == "text":
        assert "/v1/caf\\udce9\\ud800" in lines[1]
    else:
        assert [json.loads(x)["path"] for x in lines] == [
            "/v1/ok",
            "/v1/caf\\udce9\\ud800",
            "/v1/next",
        ]
