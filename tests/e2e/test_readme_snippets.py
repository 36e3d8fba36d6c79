"""Every Python snippet in the README runs as pasted, against a real gateway.

Snippets that talk to "the gateway you started with `make run`" use the documented address
(127.0.0.1:3000); the test starts the quick-start config (config/default.json) on a free port
and puts that port in place of 3000 — the only change made to any snippet. A snippet importing
``my_pkg.backends`` gets the README's own custom backend class saved there, as the README says.
Each runs in a fresh interpreter and must exit 0 and print what the README implies.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from tests.support.gateway import run_gateway

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BLOCKS = [
    (README[: m.start()].count("\n") + 1, m.group(1))
    for m in re.finditer(r"```python\n(.*?)```", README, re.S)
]
# What each kind of snippet must print (a snippet printing nothing proves little); the first
# key found in a snippet says which kind it is.
EXPECT = {
    "class MyCustomBackend": [],  # a module: defining the class is the whole run
    "GatewayServer(config, registry)": ["Hello, you said: world"],
    "GatewayClient(": ["Hello", "'echo'", "404 model_not_found"],
    "embeddings.create(": ["2 16"],
    "OpenAI(base_url": ["content='hi'"],
    "anthropic.Anthropic(": ["input_tokens: "],
}
ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):3000")
pytestmark = pytest.mark.slow


def _custom_backend_block() -> str:
    (block,) = [code for _, code in BLOCKS if "class MyCustomBackend" in code]
    return block


def test_every_snippet_is_covered() -> None:
    assert len(BLOCKS) >= 4
    for line, code in BLOCKS:
        assert [k for k in EXPECT if k in code], f"README line {line}: a snippet this test skips"


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
async def test_readme_python_snippet_runs_as_pasted(line: int, code: str, tmp_path: Path) -> None:
    cfg = json.loads((ROOT / "config" / "default.json").read_text())
    for b in cfg["backends"]:
        if b["type"] == "ollama":
            b["baseUrl"] = "http://127.0.0.1:9"  # no Ollama here: its models are left out
    cfg["port"] = 0
    pkg = tmp_path / "my_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "backends.py").write_text(_custom_backend_block())
    async with run_gateway(cfg) as gw:
        port = gw.url.rsplit(":", 1)[1]
        script = tmp_path / "snippet.py"
        script.write_text(ADDRESS.sub(f"127.0.0.1:{port}", code))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=tmp_path,
            env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    where = f"README line {line}"
    assert proc.returncode == 0, f"{where}:\n{err.decode()[-3000:]}"
    text = out.decode()
    kind = next(k for k in EXPECT if k in code)
    for w in EXPECT[kind]:
        assert w in text, f"{where}: {w!r} not in output:\n{text}"
