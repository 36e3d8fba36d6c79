"""Command-line tools the deployment tests drive (kubectl / kustomize, docker-compose).

Missing tools skip those tests with a clear reason locally and FAIL when
CHROMAGENT_REQUIRE_DEPLOY_TOOLS=1 (set by .ci/run, which installs them), so CI never
silently skips them.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ENV = "CHROMAGENT_REQUIRE_DEPLOY_TOOLS"


def require(names: list[str], what: str, install: str) -> str:
    """The path of the first of ``names`` on PATH, or skip (locally) / fail (CI)."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    wanted = " or ".join(names)
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{wanted} is not installed but {REQUIRE_ENV}=1: {what} ({install})")
    pytest.skip(f"{wanted} is not installed: {what} ({install}; CI sets {REQUIRE_ENV}=1)")
