"""`clawdbot up` as an operator runs it: progress until ready, the banner with the chat URL, a
curl example and the gRPC address, a mesh that answers, and a clean stop on Ctrl-C (SIGINT) that
leaves no process of the mesh behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from clawdbot.shared.processes import free_port


def _mesh_processes(marker: str) -> list[int]:
    """Pids whose command line mentions `marker` (this test's unique model folder / log dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_up_starts_the_mesh_prints_how_to_reach_it_and_stops_on_ctrl_c(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "up-model"
    shutil.copytree(tiny_model, model)
    logs = tmp_path / "up-logs"
    http_port, grpc_port = free_port(), free_port()
    out = (tmp_path / "up.out").open("w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clawdbot.shared.cli",
            "up",
            "--model",
            str(model),
            "--port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--log-dir",
            str(logs),
            "--ready-timeout",
            "240",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 260
        text = ""
        while "Stop: Ctrl-C" not in text:
            assert proc.poll() is None, f"clawdbot up exited early:\n{Path(out.name).read_text()}"
            assert time.monotonic() < deadline, f"no banner:\n{text}"
            time.sleep(0.2)
            text = Path(out.name).read_text()
        assert f"http://127.0.0.1:{http_port}/" in text  # the chat page
        assert f"curl http://127.0.0.1:{http_port}/v1/chat/completions" in text
        assert f"127.0.0.1:{grpc_port}" in text  # the gRPC address
        for name in ("tokenizer", "inference-0", "plugins", "memory", "gateway", "envoy"):
            assert f"{name} ready" in text
        assert httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=10).status_code == 200
        page = httpx.get(f"http://127.0.0.1:{http_port}/", timeout=10)
        assert page.status_code == 200 and "app.js" in page.text
        assert len(_mesh_processes(str(model))) >= 2  # tokenizer and inference read this folder
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 0
        assert "stopped" in Path(out.name).read_text()
        assert _mesh_processes(str(model)) == [] and _mesh_processes(str(logs)) == []
        try:
            httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
        except httpx.ConnectError:
            pass
        else:
            raise AssertionError("the front door still answers after the stop")
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
