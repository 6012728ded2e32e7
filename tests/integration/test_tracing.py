"""W3C trace context crosses process boundaries through gRPC metadata; spans land in the file exporter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry import trace

from clawdbot.shared.channels import create_channel
from clawdbot.shared.processes import ServiceProcess, free_port
from clawdbot.shared.telemetry import setup_tracing
from clawdbot.v1 import tokenizer_pb2, tokenizer_pb2_grpc

pytestmark = pytest.mark.timeout(120)


async def test_server_span_continues_the_callers_trace(
    tmp_path: Path, service_process: list[ServiceProcess]
) -> None:
    spans_file = tmp_path / "tokenizer-spans.jsonl"
    proc = ServiceProcess(
        "tokenizer",
        free_port(),
        env={"CLAWDBOT_OTEL_EXPORTER": "file", "CLAWDBOT_OTEL_FILE": str(spans_file)},
        log_path=tmp_path / "tokenizer.log",
    )
    service_process.append(proc.start())
    await proc.wait_serving(60)

    setup_tracing("test-client")
    with trace.get_tracer("test").start_as_current_span("one-turn") as span:
        trace_id = f"0x{span.get_span_context().trace_id:032x}"
        async with create_channel(proc.target) as channel:
            await tokenizer_pb2_grpc.TokenizerStub(channel).Encode(
                tokenizer_pb2.EncodeRequest(texts=["你好"])
            )
    proc.stop()  # flushes the exporter

    spans = [json.loads(line) for line in spans_file.read_text().splitlines() if line.strip()]
    encode_spans = [s for s in spans if s["name"].endswith("Tokenizer/Encode")]
    assert encode_spans, [s["name"] for s in spans]
    assert encode_spans[0]["context"]["trace_id"] == trace_id
    assert encode_spans[0]["kind"] == "SpanKind.SERVER"
    assert encode_spans[0]["resource"]["attributes"]["service.name"] == "clawdbot-tokenizer"
