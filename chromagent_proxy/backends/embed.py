"""Embedding inputs beyond an upstream's batch limit: split, sent concurrently (a few at
a time), merged back in order. Knows no backend type: each backend passes its limit and
its own call for one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from chromagent_proxy.core import ir

MAX_CONCURRENT_BATCHES = 8

BatchCall = Callable[[list[str]], Awaitable[ir.EmbedResult]]


async def in_batches(inputs: list[str], size: int, call: BatchCall) -> ir.EmbedResult:
    if len(inputs) <= size:
        return await call(inputs)
    gate = asyncio.Semaphore(MAX_CONCURRENT_BATCHES)

    async def one(chunk: list[str]) -> ir.EmbedResult:
        async with gate:
            return await call(chunk)

    chunks = [inputs[i : i + size] for i in range(0, len(inputs), size)]
    results = await asyncio.gather(*(one(c) for c in chunks))
    vectors = [v for r in results for v in r.vectors]
    counts = [r.prompt_tokens for r in results]
    tokens = None if any(c is None for c in counts) else sum(c or 0 for c in counts)
    return ir.EmbedResult(vectors, tokens)
