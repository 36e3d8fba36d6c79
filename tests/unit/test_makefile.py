"""`make run` installs only the gateway; the dev tools come with test/check; `make help` says how
to pass a config and flags."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*target: str) -> str:
    """The commands make would run from a clean clone (-B: as if nothing were installed)."""
    out = subprocess.run(
        ["make", "-n", "-B", *target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout


def test_make_run_installs_runtime_deps_only_and_says_so() -> None:
    cmds = dry_run("run")
    assert "pip install --progress-bar on -e .\n" in cmds
    assert "[dev]" not in cmds
    assert "installing the gateway's runtime dependencies" in cmds
    assert "-m chromagent_proxy --config config/default.json" in cmds


def test_make_test_adds_dev_tools() -> None:
    cmds = dry_run("test")
    assert "-e '.[dev]'" in cmds and "-m pytest" in cmds


def test_make_help_shows_config_and_args() -> None:
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "make run CONFIG=my.json ARGS=" in out.stdout
    assert ".venv/bin/chromagent-gateway" in out.stdout
    readme = (ROOT / "README.md").read_text()
    assert "make run CONFIG=my.json ARGS=" in readme and ". .venv/bin/activate" in readme
