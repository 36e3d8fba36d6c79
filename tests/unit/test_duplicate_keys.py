"""duplicate_routed_key answers alike for a small body (prefilter, then the walk) and a large
one (the walk first): the size of a prompt must not change which requests are refused."""

from __future__ import annotations

import pytest

from chromagent_proxy.core.jsonlimits import duplicate_routed_key

MSG = b'"messages": [{"role": "user", "content": "say \\"model\\": 1"}]'
CASES = [
    (b'{"model": "a", ' + MSG + b"}", None),
    (b'{"model": "a", ' + MSG + b', "model": "b"}', "model"),
    (b'{"model": "a", ' + MSG + b', "mod\\u0065l": "a"}', "model"),
    (b'{"\\u006dodel": "a", ' + MSG + b"}", None),
    (b'{"model": "a", "stream": true, ' + MSG + b', "stream": false}', "stream"),
    (b'{"model": "a", ' + MSG + b', "meta": {"model": "b", "model": "c"}}', None),
    (b'{"model": "a", ' + MSG + b', "n": 1, "n": 2}', None),  # no routed key repeated
    (b'{"model": "a", ' + MSG + b', "n": 1, "n": 2, "meta": {"model": "b"}}', "n"),
    (b'{"model": "a", ' + MSG + b', "temperature": 1, "model": "a"}', "model"),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_small_and_large_bodies_answer_alike(body: bytes, expected: str | None) -> None:
    pad = b'{"pad": "' + b"lorem ipsum " * 3_000 + b'", '
    large = pad + body[1:]
    assert len(body) < 16 * 1024 < len(large)
    assert duplicate_routed_key(body) == expected
    assert duplicate_routed_key(large) == expected
