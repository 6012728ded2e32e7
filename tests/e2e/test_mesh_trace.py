"""One chat turn is one trace across every process of the mesh (each exports to its own file)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx

from clawdbot.gateway.up import Mesh

from .conftest import API_KEY
from .helpers import model_name


def _spans(folder: Path) -> dict[str, list[dict]]:
    spans: dict[str, list[dict]] = {}
    for file in folder.glob("*.jsonl"):
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                spans.setdefault(file.stem, []).append(json.loads(line))
    return spans


def test_one_turn_is_one_trace_across_processes(mesh: Mesh) -> None:
    assert mesh.options.trace_dir is not None
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    reply = httpx.post(
        mesh.http_url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}", "traceparent": traceparent},
        json={
            "model": model_name(mesh),
            "messages": [{"role": "user", "content": "Do you ship the blue backpack to Shanghai?"}],
            "max_tokens": 6,
            "session_id": f"trace-{trace_id[:8]}",
            "stream": True,
        },
        timeout=60,
    )
    assert reply.status_code == 200 and reply.text.rstrip().endswith("data: [DONE]")
    wanted = {"gateway", "tokenizer", "plugins", "memory"}
    deadline = time.monotonic() + 20
    while True:  # spans are written as they end; the last ones may trail the reply a little
        by_process = {
            name: [s for s in spans if s["context"]["trace_id"] == "0x" + trace_id]
            for name, spans in _spans(mesh.options.trace_dir).items()
        }
        with_trace = {name for name, spans in by_process.items() if spans}
        inference = any(n.startswith("inference-") for n in with_trace)
        if wanted <= with_trace and inference:
            break
        assert time.monotonic() < deadline, f"trace {trace_id} reached only {sorted(with_trace)}"
        time.sleep(0.2)
    gateway_names = {s["name"] for s in by_process["gateway"]}
    assert "chat.turn" in gateway_names
    server_spans = {s["name"] for name, spans in by_process.items() if name != "gateway" for s in spans}
    for method in (
        "/clawdbot.v1.Memory/GetContext",
        "/clawdbot.v1.Plugins/Preprocess",
        "/clawdbot.v1.Tokenizer/ApplyChatTemplate",
        "/clawdbot.v1.Inference/Generate",
        "/clawdbot.v1.Tokenizer/DetokenizeStream",
        "/clawdbot.v1.Plugins/FilterStream",
        "/clawdbot.v1.Memory/Append",
    ):
        assert any(method.lstrip("/") in n or method in n for n in server_spans), (
            method,
            sorted(server_spans),
        )
    # every span of the turn descends from one root: the caller's traceparent
    all_spans = [s for spans in by_process.values() for s in spans]
    ids = {s["context"]["span_id"] for s in all_spans}
    roots = [s for s in all_spans if s.get("parent_id") not in ids]
    assert {r["parent_id"] for r in roots} == {"0x" + traceparent.split("-")[2]}
    # each plugin ran in its own span inside the plugins process
    assert len(by_process["plugins"]) > 2
