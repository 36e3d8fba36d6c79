"""The package layout is the architecture (DESIGN.md §9, README "Development"): every
module imports only from its own layer or the layers below it, and only the registry
knows backend types. Layers, bottom to top:

    core, schema, auth      the IR, codec, errors, config, SSE framing, sealing
    media                   images and the guarded fetcher (and its address policy)
    backends                one package per upstream dialect, the stream shell, transport
    dialects                client dialects: chat, messages, responses (decode / encode)
    routing                 plans, rules, backend health
    ops                     metrics, logs, rate limits, header guard, workers, the observer
    service                 the request path: server, edge, handlers, serving, state
    (top)                   cli, __main__, the public names in __init__

The GatewayClient library (``client``) stands apart: it imports only ``core``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "chromagent_proxy"
RANK = {
    "core": 0,
    "schema": 0,
    "auth": 0,
    "media": 1,
    "backends": 2,
    "dialects": 3,
    "routing": 4,
    "ops": 5,
    "service": 6,
    "cli": 7,
    "__main__": 7,
    "__init__": 7,
}
CLIENT_MAY_USE = {"core", "client"}
MODULES = sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path, root: Path = PKG) -> list[tuple[int, str]]:
    """(line, absolute module) of every chromagent_proxy import in ``path``."""
    tree = ast.parse(path.read_text())
    mod_parts = list(path.relative_to(root.parent).with_suffix("").parts)
    package = mod_parts if path.name == "__init__.py" else mod_parts[:-1]
    if path.name == "__init__.py":
        package = mod_parts[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod == "chromagent_proxy":
                # `from chromagent_proxy import x`: x is a sub-package or module
                out.extend((node.lineno, f"chromagent_proxy.{a.name}") for a in node.names)
            else:
                out.append((node.lineno, mod))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return [(n, m) for n, m in out if m == "chromagent_proxy" or m.startswith("chromagent_proxy.")]


def target_layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    here = layer_of(path)
    bad = []
    for line, module in imports(path):
        there = target_layer(module)
        if there == "__version__" or module == "chromagent_proxy.__version__":
            continue
        if here == "client":
            if there not in CLIENT_MAY_USE:
                bad.append(f"{line}: {module}")
            continue
        if there == "client":
            if here not in ("__init__",):
                bad.append(f"{line}: {module} (only the package root re-exports the client)")
            continue
        if RANK.get(there, 99) > RANK[here]:
            bad.append(f"{line}: {module} ({there} is above {here})")
    assert bad == []


def test_every_module_is_in_a_layer() -> None:
    assert {layer_of(p) for p in MODULES} <= set(RANK) | {"client"}


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The parser must notice a relative import that climbs: core importing service.
    root = tmp_path / "chromagent_proxy"
    (root / "core").mkdir(parents=True)
    fake = root / "core" / "probe.py"
    fake.write_text("from ..service import serving\n")
    found = imports(fake, root)
    assert [m for _, m in found] == ["chromagent_proxy.service"]
    assert RANK[target_layer(found[0][1])] > RANK["core"]


@pytest.mark.parametrize(
    "path",
    [p for p in MODULES if layer_of(p) != "backends" or p.name in ("base.py", "shell.py")],
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_only_the_registry_knows_backend_types(path: Path) -> None:
    kinds = {"gemini", "anthropic", "ollama", "openai", "openai_chat", "mock", "vertex"}
    named = [
        m
        for _, m in imports(path)
        if m.startswith("chromagent_proxy.backends.") and m.split(".")[2] in kinds
    ]
    assert named == []
