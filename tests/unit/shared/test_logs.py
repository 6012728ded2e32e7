"""Log lines are JSON objects carrying the current trace id."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from clawdbot.shared.logs import configure_logging
from clawdbot.shared.telemetry import RecordWhenExported


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


def test_with_no_exporter_spans_are_not_recorded_but_the_logs_keep_their_trace_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("unit", "INFO", "json")
    quiet = TracerProvider(sampler=RecordWhenExported()).get_tracer("test")
    with quiet.start_as_current_span("work") as span:
        logging.getLogger("clawdbot.test").info("quiet")
        context = span.get_span_context()
    assert not span.is_recording() and context.is_valid and not context.trace_flags.sampled
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["trace_id"] == f"{context.trace_id:032x}"
    # A process that exports records its spans, in the trace of a caller that does not.
    loud = TracerProvider(sampler=RecordWhenExported(exporting=True)).get_tracer("test")
    with quiet.start_as_current_span("caller") as caller, loud.start_as_current_span("callee") as callee:
        assert not caller.is_recording() and callee.is_recording()
        assert callee.get_span_context().trace_id == caller.get_span_context().trace_id
