"""Only the registry knows backend types: core modules import no backend implementation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "chromagent_proxy"
CORE = [
    *sorted(p for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py", "cli.py")),
    PKG / "schema" / "openai.py",
    PKG / "backends" / "base.py",
]
ALLOWED = {
    "chromagent_proxy.backends.base",
    "chromagent_proxy.backends.registry",
    # the adapter knows no backend type: it runs any Chat-Completions-only backend
    "chromagent_proxy.backends.adapter",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PKG)))
def test_core_module_imports_no_backend_implementation(path: Path) -> None:
    backend_imports = {
        m
        for m in imported_modules(path)
        if m.startswith("chromagent_proxy.backends.")
        and not any(m == a or m.startswith(a + ".") for a in ALLOWED)
    }
    assert backend_imports == set()


def test_the_check_sees_imports() -> None:
    # The registry does import implementations: the parser must notice that.
    found = imported_modules(PKG / "backends" / "registry.py")
    assert any(m.startswith("chromagent_proxy.backends.openai") for m in found)
