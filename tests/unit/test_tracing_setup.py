"""Turning tracing on: what decides it, and a clear refusal when the packages are missing."""

from __future__ import annotations

import sys

import pytest

from chromagent_proxy.core.config import TracingConfig
from chromagent_proxy.core.errors import ConfigError
from chromagent_proxy.ops import tracing


def test_off_unless_enabled_and_not_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert tracing.build(None) is None
    assert tracing.build(TracingConfig()) is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")
    assert tracing.build(TracingConfig(enabled=True)) is None


def test_enabled_without_the_packages_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)
    with pytest.raises(ConfigError) as err:
        tracing.build(TracingConfig(enabled=True))
    assert "tracing.enabled" in str(err.value)
    assert "pip install 'chromagent_proxy[tracing]'" in str(err.value)


def test_service_name_defaults_to_the_gateway_and_follows_otel_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    t = tracing.build(TracingConfig(enabled=True))
    assert t is not None
    assert t.exporter.encoder.resource["service.name"] == "chromagent-gateway"
    t.exporter.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge-eu")
    t = tracing.build(TracingConfig(enabled=True))
    assert t is not None
    assert t.exporter.encoder.resource["service.name"] == "edge-eu"
    t.exporter.shutdown()
