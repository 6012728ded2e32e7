"""Hot reload: SIGHUP to a real `clawdbot serve plugins` process swaps in the edited plugins.yaml
for the next turn while a turn in flight completes on the old set; a broken edit changes nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx

from clawdbot.shared.processes import ServiceProcess, free_port
from clawdbot.v1 import common_pb2, plugins_pb2, plugins_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
FIXTURE = "clawdbot_fixture_plugins.plugins"


def install_fixture_package(work: Path) -> Path:
    spec = importlib.util.spec_from_file_location(
        "fixture_install", REPO / "tests" / "plugin_fixture_pkg" / "install.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.install(work / "site", work))


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        await asyncio.sleep(0.05)


def request(text: str) -> plugins_pb2.PreprocessRequest:
    return plugins_pb2.PreprocessRequest(
        turn=plugins_pb2.TurnContext(tenant="shop", session_id="reload"),
        messages=[common_pb2.ChatMessage(role="user", content=text)],
    )


async def test_sighup_reloads_for_the_next_turn_while_the_turn_in_flight_finishes(
    tmp_path: Path, port: int, service_process: list[ServiceProcess]
) -> None:
    site = install_fixture_package(tmp_path)
    gate = tmp_path / "gate"
    config = tmp_path / "plugins.yaml"
    config.write_text(
        "plugins:\n"
        f"  - {{name: old_note, kind: retrieval, use: fixture-gated, timeout_ms: 60000, config: {{note: old set, gate_file: '{gate}'}}}}\n",
        encoding="utf-8",
    )
    metrics_port = free_port()
    proc = ServiceProcess(
        "plugins",
        port,
        ["--plugins", str(config), "--metrics-port", str(metrics_port)],
        env={"PYTHONPATH": str(site)},
        log_path=tmp_path / "plugins.log",
    )
    service_process.append(proc.start())
    await proc.wait_serving(timeout=90)
    assert proc.process is not None

    async with grpc.aio.insecure_channel(proc.target) as channel:
        stub = plugins_pb2_grpc.PluginsStub(channel)

        async def names() -> list[str]:
            return [
                p.name for p in (await stub.ListPlugins(plugins_pb2.ListPluginsRequest(), timeout=5)).plugins
            ]

        async def first_turn() -> plugins_pb2.PreprocessResponse:
            return await stub.Preprocess(request("第一轮"), timeout=60)

        in_flight = asyncio.create_task(first_turn())

        async def started() -> bool:
            return await asyncio.to_thread(Path(f"{gate}.started").exists)

        await until(started, 30, "the first turn to reach the gated plugin")

        config.write_text(
            "plugins:\n"
            f"  - {{name: new_note, kind: retrieval, use: '{FIXTURE}:StaticNote', config: {{note: new set}}}}\n",
            encoding="utf-8",
        )
        proc.process.send_signal(signal.SIGHUP)

        async def reloaded() -> bool:
            return await names() == ["new_note"]

        await until(reloaded, 30, "the reload")
        assert not in_flight.done()
        gate.write_text("open")
        first = await in_flight
        assert [c.text for c in first.context] == ["old set"]
        assert [o.plugin for o in first.outcomes] == ["old_note"]

        second = await stub.Preprocess(request("第二轮"), timeout=10)
        assert [c.text for c in second.context] == ["new set"]

        config.write_text(
            "plugins:\n  - {name: broken, kind: retrieval, config: {top_kk: 1}}\n", encoding="utf-8"
        )
        proc.process.send_signal(signal.SIGHUP)

        async def failed_logged() -> bool:
            return "plugins reload failed" in proc.log_text()

        await until(failed_logged, 30, "the failed reload to be logged")
        third = await stub.Preprocess(request("第三轮"), timeout=10)
        assert [c.text for c in third.context] == ["new set"]
        assert "plugin 'broken'" in proc.log_text()

    async with httpx.AsyncClient(timeout=5) as client:
        metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert 'clawdbot_plugin_reloads_total{result="ok"} 1.0' in metrics
    assert 'clawdbot_plugin_reloads_total{result="error"} 1.0' in metrics
    assert (
        'clawdbot_plugin_calls_total{kind="retrieval",plugin="old_note",stage="preprocess",status="ok"} 1.0'
        in metrics
    )
    assert (
        'clawdbot_plugin_calls_total{kind="retrieval",plugin="new_note",stage="preprocess",status="ok"} 2.0'
        in metrics
    )
