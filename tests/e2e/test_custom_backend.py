"""Custom backends: registered in code or by ``module``, called with the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from chromagent_proxy import BackendConfig, BackendProvider, DefaultBackendRegistry, GatewayServer
from chromagent_proxy.errors import ConfigError
from chromagent_proxy.schema.openai import ChatCompletionRequest
from tests.custom_backend_example import MyCustomBackend
from tests.support.gateway import run_gateway, sdk

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.custom_backend_example:MyCustomBackend"
HI: Any = [{"role": "user", "content": "hi there"}]


def mine(**kw: Any) -> dict[str, Any]:
    return {
        "id": "mine",
        "type": "my-custom-backend",
        "options": {"greeting": "Hello"},
        "modelMapping": {"my-model": "my-model"},
        **kw,
    }


async def check_with_sdk(server: GatewayServer) -> None:
    client = sdk(server)
    raw = await client.chat.completions.with_raw_response.create(model="my-model", messages=HI)
    assert raw.headers["x-chromagent-backend"] == "mine"
    done = raw.parse()
    assert done.choices[0].message.content == "Hello, you said: hi there"
    assert done.usage is not None and done.usage.total_tokens == 2
    stream = await client.chat.completions.create(model="my-model", messages=HI, stream=True)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, you said: hi there"
    assert chunks[-1].choices[0].finish_reason == "stop"
    await client.close()


async def test_registered_programmatically() -> None:
    registry = DefaultBackendRegistry()
    registry.register_custom_backend("my-custom-backend", MyCustomBackend)
    async with run_gateway({"backends": [mine()]}, registry) as gw:
        await check_with_sdk(gw)


async def test_loaded_by_module_in_config() -> None:
    async with run_gateway({"backends": [mine(module=MODULE)]}) as gw:
        await check_with_sdk(gw)


def test_loaded_by_module_through_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"backends": [mine(module=MODULE)], "port": 0}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chromagent_proxy", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        m = re.search(r"listening on (http://\S+)", proc.stdout.readline())
        assert m, proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        client = openai.OpenAI(base_url=f"{m.group(1)}/v1", api_key="k", max_retries=0)
        done = client.chat.completions.create(model="my-model", messages=HI)
        assert done.choices[0].message.content == "Hello, you said: hi there"
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="my-model", messages=HI, stream=True)
        )
        assert text == "Hello, you said: hi there"
        client.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # waits, and closes the pipes


@pytest.mark.parametrize(
    ("backend", "expect"),
    [
        (
            mine(module=MODULE, options={}, baseUrl="http://x"),
            "backend 'mine' (my-custom-backend): invalid config: options.greeting must be a "
            "non-empty string; baseUrl is not used by this backend",
        ),
        (
            mine(module="tests.no_such_module:X"),
            "backend 'mine': cannot import module 'tests.no_such_module'",
        ),
        (mine(module="tests.custom_backend_example:Nope"), "is not a BackendProvider subclass"),
        (mine(module="no-colon"), "module must look like 'package.module:ClassName'"),
        (mine(), "unknown backend type 'my-custom-backend'"),
    ],
)
def test_invalid_custom_config_exits_2_naming_backend(
    tmp_path: Path, backend: dict[str, Any], expect: str
) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"backends": [backend]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.run(
        [sys.executable, "-m", "chromagent_proxy", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines
    assert proc.stdout == ""


def test_invalid_custom_config_is_a_config_error_in_code() -> None:
    registry = DefaultBackendRegistry()
    registry.register_custom_backend("my-custom-backend", MyCustomBackend)
    with pytest.raises(ConfigError, match=r"backend 'mine'.*options.greeting"):
        GatewayServer({"backends": [mine(options={"greeting": 3})]}, registry)


class Exploding(BackendProvider):
    type = "exploding"

    async def chat_completion(self, request: ChatCompletionRequest, config: BackendConfig) -> Any:
        raise KeyError("oops")

    async def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[Any]:
        if config.options.get("after_first"):
            yield {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}}],
            }
        raise RuntimeError("stream oops")


class NotAGenerator(Exploding):
    type = "not-a-generator"

    def chat_completion_stream(
        self, request: ChatCompletionRequest, config: BackendConfig
    ) -> AsyncIterator[Any]:
        raise ValueError("sync oops")


@pytest.mark.parametrize("kind", ["exploding", "not-a-generator"])
async def test_raising_backend_is_a_502_naming_it_never_a_crash(kind: str) -> None:
    registry = DefaultBackendRegistry()
    registry.register_custom_backend(kind, Exploding if kind == "exploding" else NotAGenerator)
    cfg = {
        "backends": [
            {"id": "boom", "type": kind, "modelMapping": {"m": "m"}},
            {
                "id": "late",
                "type": kind,
                "options": {"after_first": True},
                "modelMapping": {"late": "late"},
            },
        ]
    }
    async with run_gateway(cfg, registry) as gw:
        client = sdk(gw)
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as info:
                if stream:
                    res = await client.chat.completions.create(model="m", messages=HI, stream=True)
                    async for _ in res:
                        pass
                else:
                    await client.chat.completions.create(model="m", messages=HI)
            assert info.value.status_code == 502
            assert "backend 'boom' failed" in info.value.message
            assert info.value.response.headers["x-chromagent-backend"] == "boom"
        if kind == "exploding":
            # Raising after the first chunk: the client gets that chunk, then an error event.
            events = await client.chat.completions.create(model="late", messages=HI, stream=True)
            got = []
            with pytest.raises(openai.APIError, match="backend 'late' failed mid-stream"):
                async for chunk in events:
                    got.append(chunk.choices[0].delta.content)
            assert got == ["partial"]
        # Still serving.
        assert (await asyncio.wait_for(client.models.list(), 5)).data
        await client.close()


class NoStreaming(MyCustomBackend):
    type = "no-streaming"

    def supports_streaming(self) -> bool:
        return False


async def test_capabilities_filter_backends_and_name_what_is_missing() -> None:
    from tests.support.routing import IMAGE_MSG, TOOLS

    registry = DefaultBackendRegistry()
    registry.register_custom_backend("my-custom-backend", MyCustomBackend)
    registry.register_custom_backend("no-streaming", NoStreaming)
    cfg = {
        "backends": [
            mine(modelMapping={"my-model": "my-model", "shared": "shared"}),
            {
                "id": "plain",
                "type": "no-streaming",
                "options": {"greeting": "Hi"},
                "modelMapping": {"plain": "plain", "shared": "shared"},
            },
            {"id": "full", "type": "mock", "modelMapping": {"shared": "shared"}},
        ]
    }
    async with run_gateway(cfg, registry) as gw:
        client = sdk(gw)
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({"tools": TOOLS}, "tools", "tools"),
            ({"messages": IMAGE_MSG}, "images", "messages"),
        ]
        for kw, missing, param in cases:
            args: dict[str, Any] = {"model": "my-model", "messages": HI, **kw}
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(**args)
            assert f"supports {missing}" in info.value.message
            assert info.value.code == "unsupported_feature"
            assert info.value.param == param
        with pytest.raises(openai.BadRequestError, match="supports streaming") as info:
            await client.chat.completions.create(model="plain", messages=HI, stream=True)
        # A model several backends serve: the ones lacking the capability are skipped.
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(
                model="shared",
                messages=HI,
                tools=TOOLS,  # type: ignore[arg-type]
            )
            assert raw.headers["x-chromagent-backend"] == "full"
            raw2 = await client.chat.completions.with_raw_response.create(
                model="shared", messages=HI, stream=True
            )
            assert raw2.headers["x-chromagent-backend"] in ("mine", "full")
        await client.close()
