"""/v1/embeddings through the official openai SDK (float and base64, with dimensions) and
LangChain's OpenAIEmbeddings, against each backend type in front of fake upstreams that
speak the providers' embedding formats and record what they receive."""

from __future__ import annotations

import array
import base64
import json
from typing import Any

import aiohttp
import httpx
import openai
import pytest
from aiohttp import web
from langchain_openai import OpenAIEmbeddings

from tests.support.gateway import run_gateway, sdk
from tests.support.upstream import FakeUpstream


def _vec(text: str, dims: int) -> list[float]:
    # Deterministic per text, exactly representable in float32 (so base64 round-trips).
    return [float((len(text) * 7 + i) % 13) / 4 for i in range(dims)]


async def _openai_embeddings(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    dims = body.get("dimensions") or 4
    data: list[dict[str, Any]] = []
    for i, text in enumerate(inputs):
        vec = _vec(str(text), dims)
        if body.get("encoding_format") == "base64":
            emb: Any = base64.b64encode(array.array("f", vec).tobytes()).decode()
        else:
            emb = vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
        }
    )


async def _ollama_embed(request: web.Request) -> web.Response:
    body = await request.json()
    inputs = body["input"]
    dims = body.get("dimensions") or 4
    return web.json_response(
        {
            "model": body["model"],
            "embeddings": [_vec(t, dims) for t in inputs],
            "prompt_eval_count": 2 * len(inputs),
        }
    )


async def _gemini_batch(request: web.Request) -> web.Response:
    body = await request.json()
    out = []
    for r in body["requests"]:
        assert r["model"] == "models/text-embedding-004"
        out.append(
            {"values": _vec(r["content"]["parts"][0]["text"], r.get("outputDimensionality") or 4)}
        )
    return web.json_response({"embeddings": out})


async def _vertex_predict(request: web.Request) -> web.Response:
    body = await request.json()
    dims = (body.get("parameters") or {}).get("outputDimensionality") or 4
    return web.json_response(
        {
            "predictions": [
                {
                    "embeddings": {
                        "values": _vec(i["content"], dims),
                        "statistics": {"token_count": 5, "truncated": False},
                    }
                }
                for i in body["instances"]
            ]
        }
    )


VERTEX_PATH = "/v1/projects/my-proj/locations/europe-west4/publishers/google/models/"


@pytest.fixture
async def upstream() -> Any:
    up = await FakeUpstream().start()
    up.route("/v1/embeddings", _openai_embeddings)
    up.route("/api/embed", _ollama_embed)
    up.route("/v1beta/models/text-embedding-004:batchEmbedContents", _gemini_batch)
    up.route(VERTEX_PATH + "text-embedding-005:predict", _vertex_predict)
    yield up
    await up.close()


def _config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "oa",
                "type": "openai",
                "baseUrl": f"{up.url}/v1",
                "apiKey": "sk-upstream",
                "modelMapping": {"oa-embed": "text-embedding-3-small"},
            },
            {
                "id": "ol",
                "type": "ollama",
                "baseUrl": up.url,
                "modelMapping": {"ol-embed": "nomic-embed-text"},
            },
            {"id": "mk", "type": "mock", "modelMapping": {"mock-embed": "mock-embed"}},
            {
                "id": "gm",
                "type": "gemini",
                "apiKey": "gkey",
                "baseUrl": f"{up.url}/v1beta",
                "modelMapping": {"gm-embed": "text-embedding-004"},
            },
            {
                "id": "vx",
                "type": "vertex-gemini",
                "apiKey": "vertex-token",
                "baseUrl": f"{up.url}/v1",
                "projectId": "my-proj",
                "location": "europe-west4",
                "modelMapping": {"vx-embed": "text-embedding-005"},
            },
            {
                "id": "an",
                "type": "anthropic",
                "apiKey": "k",
                "baseUrl": up.url,
                "modelMapping": {"claude": "claude"},
            },
        ]
    }


@pytest.mark.parametrize("model", ["oa-embed", "ol-embed", "gm-embed", "vx-embed"])
async def test_float_and_base64_with_dimensions(upstream: FakeUpstream, model: str) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        texts = ["alpha", "beta gamma", "delta"]
        r = await client.embeddings.create(model=model, input=texts, dimensions=6)
        assert [d.index for d in r.data] == [0, 1, 2]
        assert [d.embedding for d in r.data] == [_vec(t, 6) for t in texts]
        # The relay answers with the upstream's bytes (its model name); translated answers
        # name the model the client asked for.
        assert r.model == ("text-embedding-3-small" if model == "oa-embed" else model)
        # The Gemini API's batchEmbedContents reports no token counts: 0, as documented.
        assert (r.usage.prompt_tokens > 0) is (model != "gm-embed")
        # base64 asked explicitly: the SDK hands back the string; it is little-endian float32.
        r64 = await client.embeddings.create(
            model=model, input=texts, dimensions=6, encoding_format="base64"
        )
        decoded = [array.array("f", base64.b64decode(str(d.embedding))).tolist() for d in r64.data]
        assert decoded == [d.embedding for d in r.data]
        # The SDK asks for base64 by default and decodes it itself.
        plain = await client.embeddings.create(model=model, input="alpha")
        assert plain.data[0].embedding == _vec("alpha", 4)
        await client.close()
    first = upstream.received[0]
    if model == "oa-embed":
        assert first.json["model"] == "text-embedding-3-small" and first.json["dimensions"] == 6
        assert first.headers["Authorization"] == "Bearer sk-upstream"
    elif model == "ol-embed":
        assert first.json == {"model": "nomic-embed-text", "input": texts, "dimensions": 6}
    elif model == "gm-embed":
        assert first.headers["x-goog-api-key"] == "gkey"
        assert first.json["requests"][1] == {
            "model": "models/text-embedding-004",
            "outputDimensionality": 6,
            "content": {"parts": [{"text": "beta gamma"}]},
        }
    else:
        assert first.path == VERTEX_PATH + "text-embedding-005:predict"
        assert first.headers["Authorization"] == "Bearer vertex-token"
        assert first.json == {
            "instances": [{"content": t} for t in texts],
            "parameters": {"outputDimensionality": 6},
        }


async def test_mock_vectors_are_deterministic_unit_vectors(upstream: FakeUpstream) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        a = await client.embeddings.create(model="mock-embed", input=["x", "y", "x"])
        va, vb, vc = (d.embedding for d in a.data)
        assert va == vc and va != vb and len(va) == 16
        assert abs(sum(v * v for v in va) - 1.0) < 1e-5
        d8 = await client.embeddings.create(model="mock-embed", input="x", dimensions=8)
        assert len(d8.data[0].embedding) == 8
        await client.close()


@pytest.mark.parametrize(("model", "batches"), [("ol-embed", 2), ("gm-embed", 5), ("vx-embed", 2)])
async def test_five_hundred_inputs_are_split_and_merged_in_order(
    upstream: FakeUpstream, model: str, batches: int
) -> None:
    texts = [f"item {i} " + "x" * (i % 17) for i in range(500)]
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        r = await client.embeddings.create(model=model, input=texts, encoding_format="float")
        assert [d.embedding for d in r.data] == [_vec(t, 4) for t in texts]
        await client.close()
    sent = [rec.json for rec in upstream.received]
    assert len(sent) == batches
    key = {"ol-embed": "input", "gm-embed": "requests", "vx-embed": "instances"}[model]
    assert sum(len(b[key]) for b in sent) == 500


async def test_backend_without_embeddings_and_token_ids(upstream: FakeUpstream) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        with pytest.raises(openai.BadRequestError) as exc:
            await client.embeddings.create(model="claude", input="x")
        assert exc.value.body["param"] == "model"  # type: ignore[index]
        assert "claude" in exc.value.message
        # Token ids: relayed to OpenAI-compatible upstreams, a clear 400 elsewhere.
        ok = await client.embeddings.create(model="oa-embed", input=[[1, 2, 3]])
        assert len(ok.data) == 1
        with pytest.raises(openai.BadRequestError) as exc:
            await client.embeddings.create(model="ol-embed", input=[[1, 2, 3]])
        assert exc.value.body["param"] == "input"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="ol-embed", input=[])
        await client.close()


@pytest.mark.parametrize("model", ["oa-embed", "ol-embed", "mock-embed", "gm-embed", "vx-embed"])
async def test_langchain_openai_embeddings(upstream: FakeUpstream, model: str) -> None:
    # Our own HTTP client, closed at the end: LangChain never closes the one it would make.
    async with run_gateway(_config(upstream)) as gw, httpx.AsyncClient() as http:
        emb = OpenAIEmbeddings(
            model=model,
            base_url=f"{gw.url}/v1",
            api_key="test-key",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,  # no tiktoken download: plain strings
            max_retries=0,
            http_async_client=http,
        )
        docs = await emb.aembed_documents(["first doc", "second doc"])
        query = await emb.aembed_query("first doc")
        assert len(docs) == 2 and docs[0] == query and docs[0] != docs[1]


async def test_embeddings_are_counted_with_an_operation_label(upstream: FakeUpstream) -> None:
    async with run_gateway(_config(upstream)) as gw:
        client = sdk(gw)
        await client.embeddings.create(model="ol-embed", input=["a", "b"])
        await client.close()
        async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
            text = await r.text()
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("gen_ai_tokens_total") and 'gen_ai_operation_name="embeddings"' in line
    ]
    assert lines, text[:2000]
    assert any(line.endswith(" 4.0") for line in lines if 'gen_ai_token_type="input"' in line)


def test_module_is_json_clean() -> None:
    # The fake upstreams speak JSON the SDK parses (guards the helpers above).
    assert json.loads(json.dumps(_vec("a", 3))) == _vec("a", 3)


async def test_custom_backend_embed_contract() -> None:
    from tests.support.ir_backend import config, registry

    async with run_gateway(config(), registry()) as gw, httpx.AsyncClient() as http:
        client = sdk(gw)
        r = await client.embeddings.create(model="m", input=["ab", "abcd"], encoding_format="float")
        assert [d.embedding for d in r.data] == [[2.0, 1.0], [4.0, 1.0]]
        assert r.usage.prompt_tokens == 2 and r.model == "m"
        emb = OpenAIEmbeddings(
            model="m",
            base_url=f"{gw.url}/v1",
            api_key="test-key",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
            max_retries=0,
            http_async_client=http,
        )
        assert await emb.aembed_query("abc") == [3.0, 1.0]
        await client.close()
