"""Log lines are JSON objects carrying the current trace id."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from clawdbot.shared.logs import configure_logging


def test_json_log_line_has_the_trace_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("unit", "INFO", "json")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("clawdbot.test").info("hello %s", "世界", extra={"order": "SO1"})
        trace_id = f"{span.get_span_context().trace_id:032x}"
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "hello 世界"
    assert line["trace_id"] == trace_id
    assert line["service"] == "unit" and line["order"] == "SO1" and line["level"] == "info"
