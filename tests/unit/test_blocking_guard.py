"""The suite's blocking-call guard (tests/conftest.py) really fails gateway code that blocks
the event loop, and leaves test code and start-up alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from blockbuster import BlockingError

from chromagent_proxy.core.config_load import read_json
from chromagent_proxy.service.server import GatewayServer


async def test_gateway_code_reading_a_file_on_the_loop_fails(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{}")  # test code may block
    with pytest.raises(BlockingError):
        read_json(path)  # gateway code may not, on the event loop


def test_the_same_call_off_the_loop_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{}")
    assert read_json(path) == {}


async def test_building_the_server_may_block_before_it_serves(tmp_path: Path) -> None:
    server = GatewayServer({"backends": [{"id": "m", "type": "mock"}]})
    assert list(server.backends) == ["m"]
