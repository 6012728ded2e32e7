"""Each plugin call is a span (with its outcome) and a metric (calls by status, latency)."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import StatusCode
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from clawdbot.services.plugins.loader import load_plugin_set
from clawdbot.services.plugins.pipeline import preprocess
from clawdbot.shared.telemetry import export_spans, setup_tracing

from .conftest import user_turn


def calls(plugin: str, kind: str, status: str) -> float:
    labels = {"plugin": plugin, "kind": kind, "stage": "preprocess", "status": status}
    return REGISTRY.get_sample_value("clawdbot_plugin_calls_total", labels) or 0.0


@pytest.mark.usefixtures("fixture_plugins")
async def test_plugin_calls_are_spans_and_metrics(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("plugins-test")
    export_spans(SimpleSpanProcessor(exporter))
    path = tmp_path / "plugins.yaml"
    path.write_text(
        "plugins:\n"
        "  - {name: telemetry_lang, kind: language}\n"
        "  - {name: telemetry_slow, kind: retrieval, timeout_ms: 50,"
        " use: 'clawdbot_fixture_plugins.plugins:SlowNote', config: {seconds: 30}}\n",
        encoding="utf-8",
    )
    before_ok = calls("telemetry_lang", "language", "ok")
    before_timeout = calls("telemetry_slow", "retrieval", "timeout")
    plugin_set = load_plugin_set(path)
    await plugin_set.setup()
    await preprocess(plugin_set, user_turn("Where is my parcel?"))

    spans = {span.name: span for span in exporter.get_finished_spans()}
    ok = spans["plugin.preprocess telemetry_lang"]
    assert ok.attributes is not None and ok.attributes["plugin.kind"] == "language"
    assert ok.attributes["plugin.status"] == "ok" and ok.status.status_code != StatusCode.ERROR
    slow = spans["plugin.preprocess telemetry_slow"]
    assert slow.attributes is not None and slow.attributes["plugin.status"] == "timeout"
    assert slow.status.status_code == StatusCode.ERROR

    assert calls("telemetry_lang", "language", "ok") == before_ok + 1
    assert calls("telemetry_slow", "retrieval", "timeout") == before_timeout + 1
    latency = REGISTRY.get_sample_value(
        "clawdbot_plugin_latency_seconds_count",
        {"plugin": "telemetry_slow", "kind": "retrieval", "stage": "preprocess"},
    )
    assert latency is not None and latency >= 1
