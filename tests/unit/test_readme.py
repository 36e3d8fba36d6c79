"""The README's examples are the code the tests run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from chromagent_proxy.backends.registry import DefaultBackendRegistry
from chromagent_proxy.core.config_load import build_config

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_custom_backend_example_is_the_tested_module() -> None:
    block = re.search(r"```python\n(.*?)```", section("Custom backends"), re.S)
    assert block is not None
    assert block.group(1) == (ROOT / "tests" / "custom_backend_example.py").read_text()


def test_every_json_config_example_in_the_readme_is_valid() -> None:
    """Each complete config in the README loads (secrets supplied through the environment)."""
    registry = DefaultBackendRegistry()
    env = {name: "test-value" for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", README)}
    checked = 0
    for block in re.findall(r"```json\n(.*?)```", README, re.S):
        try:
            data = json.loads(block)
        except ValueError:
            continue  # fragments such as a single backend entry
        if not isinstance(data, dict) or "backends" not in data:
            continue
        for b in data["backends"]:
            b.pop("module", None)  # custom modules are checked by the custom backend tests
            b.pop("credentialsFile", None)  # points at a file on the user's machine
        cfg = build_config(data, env=env, known_types=registry.types() | {"my-custom-backend"})
        for backend in cfg.backends:
            if backend.type != "my-custom-backend":
                registry.create(backend)  # each backend's own validate_config accepts it
        checked += 1
    assert checked >= 5


def test_readme_documents_every_config_key_env_var_and_flag() -> None:
    import msgspec

    from chromagent_proxy import cli
    from chromagent_proxy.core import config, config_load

    structs = [
        obj
        for obj in vars(config).values()
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj is not config._Base
    ]
    missing = [
        f"{tp.__name__}.{name.encode_name}"
        for tp in structs
        for name in msgspec.structs.fields(tp)
        if f"`{name.encode_name}`" not in README and f'"{name.encode_name}"' not in README
    ]
    missing += [env for env in config_load.ENV_VARS if f"`{env}`" not in README]
    flags = [
        a for action in cli._parser()._actions for a in action.option_strings if a.startswith("--")
    ]
    missing += [f for f in flags if f not in ("--help",) and f"`{f}" not in README]
    assert missing == []


def test_backend_fragments_say_they_go_inside_backends() -> None:
    """A single backend entry pasted as a whole config fails ("unknown field `id`"): each such
    fragment in the README is introduced as one entry of "backends"."""
    fragments = 0
    for m in re.finditer(r"```json\n(.*?)```", README, re.S):
        try:
            data = json.loads(m.group(1))
        except ValueError:
            continue
        if isinstance(data, dict) and "id" in data and "type" in data:
            fragments += 1
            intro = README[: m.start()].rstrip().rsplit("\n\n", 1)[-1]
            assert '`"backends": [...]`' in intro and "not a whole config" in intro, intro
    assert fragments >= 3
