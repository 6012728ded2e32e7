"""`clawdbot serve memory` as an operator runs it: embedded store, metrics, traces, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from clawdbot.services.memory.testing import chat_message, session_key
from clawdbot.shared.channels import create_channel
from clawdbot.shared.processes import ServiceProcess, free_port
from clawdbot.v1 import memory_pb2, memory_pb2_grpc


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


async def test_serve_memory_embedded_counts_traces_and_drains(
    tmp_path: Path, service_process: list[ServiceProcess]
) -> None:
    metrics_port = free_port()
    spans = tmp_path / "spans.jsonl"
    proc = ServiceProcess(
        "memory",
        free_port(),
        ["--metrics-port", str(metrics_port), "--ttl", "600"],
        env={"CLAWDBOT_OTEL_EXPORTER": "file", "CLAWDBOT_OTEL_FILE": str(spans)},
        log_path=tmp_path / "memory.log",
    ).start()
    service_process.append(proc)
    await proc.wait_serving(60)
    key = session_key("acme", "s1")
    async with create_channel(proc.target) as channel:
        stub = memory_pb2_grpc.MemoryStub(channel)
        await stub.Append(
            memory_pb2.AppendRequest(
                key=key, messages=[chat_message("a", tokens=3), chat_message("b", "assistant", tokens=4)]
            )
        )
        await stub.Append(
            memory_pb2.AppendRequest(key=key, messages=[chat_message("b", "assistant", tokens=4)])
        )
        ctx = await stub.GetContext(memory_pb2.GetContextRequest(key=key, token_budget=100))
        assert [m.message_id for m in ctx.messages] == ["a", "b"] and ctx.tokens_used == 7

    text = await asyncio.to_thread(scrape, metrics_port)
    assert 'clawdbot_memory_operations_total{backend="embedded",op="append",outcome="ok"} 2.0' in text
    assert 'clawdbot_memory_messages_total{backend="embedded",result="duplicate"} 1.0' in text
    assert 'clawdbot_memory_sessions_touched_total{backend="embedded",op="get_context"} 1.0' in text
    assert 'clawdbot_memory_store_up{backend="embedded"} 1.0' in text
    assert "clawdbot_memory_operation_seconds_bucket" in text

    assert proc.stop() == 0  # SIGTERM: drained and exited cleanly
    # run_service's processes run on uvloop (shared/event_loop.py).
    assert [line["event_loop"] for line in proc.log_records("listening")] == ["uvloop"]
    names = {json.loads(line)["name"] for line in spans.read_text().splitlines() if line.strip()}
    assert {"memory.append", "memory.get_context"} <= names
