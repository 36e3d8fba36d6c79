"""HTTP basics on the real gateway: HEAD answers like GET without a body on every GET route
(`HEAD /` too: Claude Code probes it), `GET /v1/models/{id}` (the SDKs' models.retrieve()),
streams marked unbufferable for nginx, and a .dockerignore that keeps the venv out of builds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.support.gateway import run_gateway, sdk

ROOT = Path(__file__).resolve().parents[2]
CFG: dict[str, Any] = {
    "backends": [
        {"id": "mock", "type": "mock", "modelMapping": {"echo": "echo", "org/model-x": "x"}}
    ]
}
GET_ROUTES = ["/", "/health", "/metrics", "/v1/models", "/v1/models/echo", "/v1/models/nope"]


@pytest.mark.parametrize("cors", [False, True])
async def test_head_answers_like_get_without_a_body(cors: bool) -> None:
    cfg = {**CFG, "cors": {"origin": "https://app.example"}} if cors else CFG
    async with run_gateway(cfg) as gw, aiohttp.ClientSession() as s:
        for path in GET_ROUTES:
            async with s.get(gw.url + path) as got:
                body = await got.read()
            async with s.head(gw.url + path) as head:
                assert await head.read() == b"", path
            assert head.status == got.status, path
            assert head.headers["Content-Type"] == got.headers["Content-Type"], path
            assert int(head.headers["Content-Length"]) == len(body), path
            assert got.status == (404 if path.endswith("nope") else 200), (path, body)


async def test_models_retrieve_returns_the_model_object_or_openai_404() -> None:
    async with run_gateway(CFG) as gw:
        client = sdk(gw)
        model = await client.models.retrieve("echo")
        assert (model.id, model.object, model.owned_by) == ("echo", "model", "mock")
        listed = {m.id for m in (await client.models.list()).data}
        assert "org/model-x" in listed
        assert (await client.models.retrieve("org/model-x")).id == "org/model-x"
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("gpt-nope")
    err: Any = info.value.body
    assert err["code"] == "model_not_found"
    assert "'gpt-nope' is not served by this gateway" in err["message"]


async def test_streams_tell_nginx_not_to_buffer() -> None:
    async with run_gateway(CFG) as gw:
        resp = await sdk(gw).chat.completions.with_raw_response.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for _ in resp.parse():
            pass


def test_dockerignore_keeps_the_venv_and_tests_out_of_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".venv/", ".git/", "tests/", "bench/"} <= set(ignored)
    copied = [
        line.split()[1:-1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    ]
    for sources in copied:
        for src in sources:
            assert not any(src.startswith(p.rstrip("/")) for p in ignored), src
