"""Image URLs end to end: official SDK → real gateway → guarded fetcher → fake upstream.

An image server on loopback counts every TCP connection. Allowed fetches
(``media.allowCidrs`` lists loopback, as an operator would list a private
image store) must reach each translator's upstream as the right inline bytes;
blocked ones must be a 400 naming the image part, with zero connections to
the image server and no upstream request at all.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.support.gateway import run_gateway, sdk
from tests.support.image_server import GIF, JPEG, PNG, CountingServer, redirect, reply
from tests.support.upstream import FakeUpstream, json_reply, stream_reply

PARAM = "messages[0].content[1].image_url"
ALLOW_LOOPBACK = {"allowCidrs": ["127.0.0.1/32"]}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_msg(*urls: str) -> Any:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What is this?"}]
    parts += [{"type": "image_url", "image_url": {"url": u, "detail": "low"}} for u in urls]
    return [{"role": "user", "content": parts}]


# -- one entry per backend type that needs (or may be told to use) inline bytes


@dataclass(frozen=True)
class Kind:
    name: str
    backend: Callable[[str], dict[str, Any]]
    answer: Callable[[FakeUpstream], None]
    # The inline images (bytes, media type or None) in the body the upstream received.
    inline: Callable[[Any], list[tuple[bytes, str | None]]]
    path: str  # the upstream endpoint the request must reach


def _openai_answer(up: FakeUpstream) -> None:
    up.route(
        "/v1/chat/completions",
        json_reply(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "a cat"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        ),
    )


def _openai_inline(body: Any) -> list[tuple[bytes, str | None]]:
    out: list[tuple[bytes, str | None]] = []
    for part in body["messages"][0]["content"][1:]:
        head, _, data = part["image_url"]["url"].partition(",")
        assert head.startswith("data:") and head.endswith(";base64"), head
        out.append((base64.b64decode(data), head[5:-7]))
    return out


def _anthropic_answer(up: FakeUpstream) -> None:
    up.route(
        "*",
        json_reply(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [{"type": "text", "text": "a cat"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 2},
            }
        ),
    )


def _anthropic_inline(body: Any) -> list[tuple[bytes, str | None]]:
    blocks = [b for b in body["messages"][0]["content"] if b["type"] == "image"]
    out: list[tuple[bytes, str | None]] = []
    for b in blocks:
        assert b["source"]["type"] == "base64", b
        out.append((base64.b64decode(b["source"]["data"]), b["source"]["media_type"]))
    return out


def _ollama_answer(up: FakeUpstream) -> None:
    up.route(
        "/api/chat",
        json_reply(
            {
                "model": "llava",
                "created_at": "2025-08-20T13:48:24.316155Z",
                "message": {"role": "assistant", "content": "a cat"},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 1,
                "eval_count": 2,
            }
        ),
    )


def _ollama_inline(body: Any) -> list[tuple[bytes, str | None]]:
    return [(base64.b64decode(i), None) for i in body["messages"][0]["images"]]


def _gemini_answer(up: FakeUpstream) -> None:
    up.route(
        "*",
        json_reply(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": "a cat"}]},
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 1,
                    "candidatesTokenCount": 2,
                    "totalTokenCount": 3,
                },
            }
        ),
    )


def _gemini_inline(body: Any) -> list[tuple[bytes, str | None]]:
    parts = [p["inlineData"] for p in body["contents"][0]["parts"] if "inlineData" in p]
    return [(base64.b64decode(p["data"]), p["mimeType"]) for p in parts]


KINDS = [
    Kind(
        "openai-inlineImages",
        lambda url: {"type": "openai", "baseUrl": f"{url}/v1", "apiKey": "k", "inlineImages": True},
        _openai_answer,
        _openai_inline,
        "/v1/chat/completions",
    ),
    Kind(
        "vertex-anthropic",
        lambda url: {
            "type": "vertex-anthropic",
            "baseUrl": url,
            "projectId": "proj",
            "location": "us-east5",
            "additionalHeaders": {"Authorization": "Bearer test-token"},
        },
        _anthropic_answer,
        _anthropic_inline,
        "/projects/proj/locations/us-east5/publishers/anthropic/models/vision:rawPredict",
    ),
    Kind(
        "anthropic-inlineImages",
        lambda url: {"type": "anthropic", "baseUrl": url, "apiKey": "k", "inlineImages": True},
        _anthropic_answer,
        _anthropic_inline,
        "/v1/messages",
    ),
    Kind(
        "ollama",
        lambda url: {"type": "ollama", "baseUrl": url},
        _ollama_answer,
        _ollama_inline,
        "/api/chat",
    ),
    Kind(
        "gemini",
        lambda url: {"type": "gemini", "baseUrl": url, "apiKey": "k"},
        _gemini_answer,
        _gemini_inline,
        "/models/vision:generateContent",
    ),
    Kind(
        "vertex-gemini",
        lambda url: {
            "type": "vertex-gemini",
            "baseUrl": url,
            "projectId": "proj",
            "location": "us-central1",
            "apiKey": "k",
        },
        _gemini_answer,
        _gemini_inline,
        "/projects/proj/locations/us-central1/publishers/google/models/vision:generateContent",
    ),
]


def gateway_config(
    kind: Kind, up: FakeUpstream, media: dict[str, Any] | None = None
) -> dict[str, Any]:
    backend = {"id": "b", **kind.backend(up.url)}
    return {"backends": [backend], "defaultBackend": "b", "media": media or {}}


@pytest.fixture
async def images() -> AsyncIterator[CountingServer]:
    srv = await CountingServer().start()
    srv.routes["/cat.png"] = reply(200, PNG, content_type="application/octet-stream")
    srv.routes["/dog.jpg"] = reply(200, JPEG, content_type="image/png")  # lies; bytes decide
    srv.routes["/hop"] = redirect("/cat.png")
    yield srv
    await srv.close()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_allowed_fetch_reaches_upstream_as_inline_bytes(
    kind: Kind, upstream: FakeUpstream, images: CountingServer
) -> None:
    kind.answer(upstream)
    cat, dog, hop = images.url("/cat.png"), images.url("/dog.jpg"), images.url("/hop")
    gif = f"data:image/gif;base64,{b64(GIF)}"
    async with run_gateway(gateway_config(kind, upstream, ALLOW_LOOPBACK)) as gw:
        resp = await sdk(gw).chat.completions.create(
            model="vision", messages=image_msg(cat, dog, cat, gif, hop)
        )
    assert resp.choices[0].message.content == "a cat"
    (sent,) = upstream.received
    assert sent.path == kind.path
    got = kind.inline(sent.json)
    expected = [(PNG, "image/png"), (JPEG, "image/jpeg"), (PNG, "image/png"), (GIF, "image/gif"),
                (PNG, "image/png")]  # fmt: skip
    assert [d for d, _ in got] == [d for d, _ in expected]
    if got[0][1] is not None:  # Ollama's images carry no media type
        assert [t for _, t in got] == [t for _, t in expected]
    # The same URL once; the redirect hop plus its target.
    assert sorted(r.path for r in images.requests) == ["/cat.png", "/cat.png", "/dog.jpg", "/hop"]
    # No gateway or client credentials on the image requests.
    for r in images.requests:
        assert "authorization" not in r.headers and "x-api-key" not in r.headers
    assert b"http://127.0.0.1" not in upstream.received[0].body


BLOCKED = [
    ("http://127.0.0.1:{port}/cat.png", "non-public address"),
    ("http://localhost:{port}/cat.png", "non-public address"),
    ("http://[::1]:{port}/cat.png", "non-public address"),
    ("http://0.0.0.0:{port}/cat.png", "non-public address"),
    ("http://2130706433:{port}/cat.png", "non-public address"),
    ("http://0x7f.1:{port}/cat.png", "non-public address"),
    ("http://017700000001:{port}/cat.png", "non-public address"),
    ("http://[::ffff:127.0.0.1]:{port}/cat.png", "non-public address"),
    ("http://10.0.0.1/cat.png", "non-public address"),
    ("http://169.254.169.254/latest/meta-data/iam/", "non-public address"),
    ("file:///etc/passwd", "data: URL or an http"),
]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@pytest.mark.parametrize(("template", "why"), BLOCKED)
async def test_blocked_url_is_400_with_no_connection_and_no_upstream_call(
    kind: Kind, upstream: FakeUpstream, images: CountingServer, template: str, why: str
) -> None:
    kind.answer(upstream)
    url = template.format(port=images.port)
    async with run_gateway(gateway_config(kind, upstream)) as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk(gw).chat.completions.create(model="vision", messages=image_msg(url))
    err = info.value.body
    assert isinstance(err, dict)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == PARAM
    assert why in err["message"]
    assert images.connections == 0
    assert upstream.received == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_fetch_failures_are_400s_naming_the_part(
    kind: Kind, upstream: FakeUpstream, images: CountingServer
) -> None:
    kind.answer(upstream)
    images.routes["/page.png"] = reply(
        200, b"<html>secret-internal-page</html>", content_type="image/png"
    )
    images.routes["/big.png"] = reply(200, PNG + b"\0" * 4096)
    cases = [
        (images.url("/missing.png"), "HTTP 404"),
        (images.url("/page.png"), "not return a supported image"),
        (images.url("/big.png"), "larger than 2048 bytes"),
    ]
    media = {**ALLOW_LOOPBACK, "maxBytes": 2048}
    async with run_gateway(gateway_config(kind, upstream, media)) as gw:
        client = sdk(gw)
        for url, why in cases:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(
                    model="vision", messages=image_msg(f"data:image/png;base64,{b64(PNG)}", url)
                )
            err = info.value.body
            assert isinstance(err, dict)
            assert err["param"] == "messages[0].content[2].image_url"
            assert why in err["message"]
            assert "secret" not in err["message"]
    assert upstream.received == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
async def test_remote_fetch_off_is_a_clear_400(
    kind: Kind, upstream: FakeUpstream, images: CountingServer
) -> None:
    kind.answer(upstream)
    media = {**ALLOW_LOOPBACK, "remoteFetch": False}
    async with run_gateway(gateway_config(kind, upstream, media)) as gw:
        with pytest.raises(openai.BadRequestError) as info:
            await sdk(gw).chat.completions.create(
                model="vision", messages=image_msg(images.url("/cat.png"))
            )
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == PARAM and "remote image fetching is off" in err["message"]
    assert images.connections == 0 and upstream.received == []


# -- upstreams that fetch URLs themselves get them unchanged, and the gateway fetches nothing


@pytest.mark.parametrize(
    ("backend", "where"),
    [
        (lambda url: {"type": "openai", "baseUrl": f"{url}/v1", "apiKey": "k"}, "openai"),
        (lambda url: {"type": "anthropic", "baseUrl": url, "apiKey": "k"}, "anthropic"),
    ],
    ids=["openai", "anthropic"],
)
async def test_url_passes_through_where_the_upstream_fetches(
    upstream: FakeUpstream, images: CountingServer, backend: Any, where: str
) -> None:
    (_openai_answer if where == "openai" else _anthropic_answer)(upstream)
    url = images.url("/cat.png")
    cfg = {"backends": [{"id": "b", **backend(upstream.url)}], "defaultBackend": "b"}
    async with run_gateway(cfg) as gw:
        await sdk(gw).chat.completions.create(model="vision", messages=image_msg(url))
    body = upstream.received[0].json
    if where == "openai":
        assert body["messages"] == image_msg(url)
    else:
        assert body["messages"][0]["content"][1]["source"] == {"type": "url", "url": url}
    assert images.connections == 0


async def test_openai_inline_images_stream(upstream: FakeUpstream, images: CountingServer) -> None:
    upstream.route(
        "/v1/chat/completions",
        stream_reply(
            b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":"a cat"},"finish_reason":null}]}\n\n'
            b"data: [DONE]\n\n"
        ),
    )
    kind = KINDS[0]
    async with run_gateway(gateway_config(kind, upstream, ALLOW_LOOPBACK)) as gw:
        stream = await sdk(gw).chat.completions.create(
            model="vision", messages=image_msg(images.url("/cat.png")), stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "a cat"
    assert _openai_inline(upstream.received[0].json) == [(PNG, "image/png")]
    assert upstream.received[0].json["messages"][0]["content"][1]["image_url"]["detail"] == "low"


async def test_openai_inline_images_leaves_text_only_requests_byte_identical(
    upstream: FakeUpstream,
) -> None:
    _openai_answer(upstream)
    async with run_gateway(gateway_config(KINDS[0], upstream)) as gw:
        await sdk(gw).chat.completions.create(
            model="vision", messages=[{"role": "user", "content": "hi"}]
        )
    assert upstream.received[0].json == {
        "model": "vision",
        "messages": [{"role": "user", "content": "hi"}],
    }


async def test_bad_allow_cidr_stops_start_up() -> None:
    from chromagent_proxy import GatewayServer
    from chromagent_proxy.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"media\.allowCidrs\[0\]"):
        GatewayServer({"media": {"allowCidrs": ["10.0.0.0/33"]}})


async def test_allow_hosts_entry_with_the_system_resolver(
    upstream: FakeUpstream, images: CountingServer
) -> None:
    """``localhost`` is blocked by default; listed in ``allowHosts`` it is looked up with the
    real getaddrinfo and fetched from the pinned addresses."""
    kind = next(k for k in KINDS if k.name == "ollama")
    kind.answer(upstream)
    url = images.url("/cat.png", host="localhost")
    cfg = gateway_config(kind, upstream, {"allowHosts": ["LOCALHOST"]})
    async with run_gateway(cfg) as gw:
        await sdk(gw).chat.completions.create(model="vision", messages=image_msg(url))
    assert kind.inline(upstream.received[0].json) == [(PNG, None)]
    assert images.connections == 1
