"""core/allocator.py: a process that handles 1 MB bodies reuses their memory instead of
having the kernel fault in fresh pages for every request (bench/README.md, issue 20)."""

from __future__ import annotations

import os
import subprocess
import sys

# What a 1 MB request does with its body: parts joined, decoded to text, copied renamed.
_SCRIPT = """
import resource, sys
from chromagent_proxy.core.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tune" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):  # warm-up: the heap grows once
    parts = [b"x" * 262144 for _ in range(4)]; body = b"".join(parts); text = body.decode()
    del parts, body, text
start = faults()
for _ in range(40):
    parts = [b"x" * 262144 for _ in range(4)]
    body = b"".join(parts); text = body.decode(); renamed = body + b"y"
    del parts, body, text, renamed
print(tuned, (faults() - start) / 40)
"""


def _run(mode: str, **env: str) -> tuple[str, float]:
    clean = {k: "" for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        env={k: v for k, v in {**os.environ, **clean, **env}.items() if v},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], float(out[1])


def test_freed_bodies_are_reused_without_page_faults() -> None:
    tuned, faults = _run("tune")
    assert tuned == "True"
    assert faults < 8  # a few pages of bookkeeping, not the 256 of one fresh 1 MB buffer
    untuned, before = _run("plain")
    assert untuned == "False"
    assert before > 200  # without it every buffer is faulted in anew (≈ 1,000 here)


def test_an_operators_own_malloc_tuning_is_left_alone() -> None:
    tuned, _ = _run("tune", MALLOC_TRIM_THRESHOLD_="131072")
    assert tuned == "False"
