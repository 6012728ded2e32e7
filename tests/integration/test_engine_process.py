"""The engine core process: what the service does when it starts, fails, dies, or loses its parent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from clawdbot.services.inference.engine_client import EngineClient, EngineStartError
from clawdbot.services.inference.sequence import Finish, SamplingParams, Sequence
from clawdbot.services.inference.service import InferenceService
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.services.inference.testing import reference_greedy, tiny_model
from clawdbot.shared.channels import create_channel
from clawdbot.shared.errors import Unavailable
from clawdbot.shared.processes import ServiceProcess, health_status
from clawdbot.v1 import common_pb2, inference_pb2, inference_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def settings_for(folder: Path, port: int, **overrides: Any) -> InferenceSettings:
    options: dict[str, Any] = {"block_size": 4, "num_kv_blocks": 256, "max_num_batched_tokens": 64}
    options.update(overrides)
    return InferenceSettings(model=folder, port=port, log_level="WARNING", grace_seconds=1.0, **options)


def greedy(prompt: list[int], max_tokens: int) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        prompt_token_ids=prompt,
        sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True),
    )


def exited(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (its parent died; init reaps it in its own time)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def child_pids(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return children.read().split()


async def wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)


def test_the_grpc_process_holds_no_model() -> None:
    """The service's process imports neither torch nor the engine's metrics: the core owns both."""
    code = (
        "import sys, clawdbot.services.inference.cli, clawdbot.services.inference.service;"
        "print('torch' in sys.modules, 'clawdbot.services.inference.metrics' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "False"]


async def test_a_dead_core_fails_its_streams_and_a_new_one_takes_over(tmp_path: Path, port: int) -> None:
    hf = tiny_model("mistral", tmp_path, seed=41)
    prompt = [5, 9, 14, 200, 31, 7]
    expected = reference_greedy(hf, prompt, 12)
    service = InferenceService(settings_for(tmp_path, port))
    await service.host.start()
    await service.startup()
    await service.host.set_serving(True)
    target = f"127.0.0.1:{port}"
    try:
        first = service.engine
        assert isinstance(first, EngineClient)
        async with create_channel(target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            call = stub.Generate(greedy(prompt, 500), timeout=60)
            assert (await call.read()).token_ids  # running in the core
            os.kill(first.process.pid, signal.SIGKILL)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in call:
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "engine" in (err.value.details() or "")
            assert await health_status(target) == NOT_SERVING
            assert await wait_for(lambda: _serving(target), timeout=60)
            assert service.core_restarts == 1 and service.engine is not first
            tokens = [t async for m in stub.Generate(greedy(prompt, 12), timeout=60) for t in m.token_ids]
            assert tokens == expected
    finally:
        await service.host.stop()
        await service.shutdown()
    assert isinstance(service.engine, EngineClient) and service.engine.process.returncode == 0


async def _serving(target: str) -> bool:
    return await health_status(target) == SERVING


async def test_a_core_that_cannot_load_the_model_fails_the_start_with_its_reason(
    tmp_path: Path, port: int
) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "mistral"}')
    with pytest.raises(EngineStartError, match=r"config\.json"):
        await EngineClient.spawn(settings_for(tmp_path, port))


async def test_the_core_ends_with_its_service_even_when_the_service_is_killed(tmp_path: Path) -> None:
    from clawdbot.shared.processes import free_port

    tiny_model("mistral", tmp_path / "model", seed=42)
    service = ServiceProcess(
        "inference",
        free_port(),
        ["--model", str(tmp_path / "model"), "--num-kv-blocks", "256", "--block-size", "4"],
        log_path=tmp_path / "inference.log",
    )
    service.start()
    try:
        await service.wait_serving(timeout=90)
        assert service.process is not None
        children = child_pids(service.process.pid)
        assert len(children) == 1, service.log_text()
        core = int(children[0])
        async with create_channel(service.target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            messages = [m async for m in stub.Generate(greedy([5, 6, 7], 8), timeout=60)]
            assert messages[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
        os.kill(service.process.pid, signal.SIGKILL)  # no drain, no shutdown hook: only the socket closes
        service.process.wait(10)
        assert await wait_for(lambda: _exited(core), timeout=30), service.log_text()
    finally:
        service.kill()


async def _exited(pid: int) -> bool:
    return exited(pid)


async def test_sigterm_drains_the_streams_then_stops_the_core(tmp_path: Path) -> None:
    """A stream in flight when the service's process group is told to stop (as Ctrl-C or a container
    stop would) still gets all its tokens: the core ignores the signal and stops after the drain."""
    from clawdbot.shared.processes import free_port

    hf = tiny_model("mistral", tmp_path / "model", seed=43)
    prompt = [8, 17, 3, 99]
    expected = reference_greedy(hf, prompt, 300)
    service = ServiceProcess(
        "inference",
        free_port(),
        ["--model", str(tmp_path / "model"), "--num-kv-blocks", "256", "--block-size", "4"],
        env={"CLAWDBOT_INFERENCE_GRACE_SECONDS": "30"},
        log_path=tmp_path / "inference.log",
    )
    service.start()
    try:
        await service.wait_serving(timeout=90)
        assert service.process is not None
        async with create_channel(service.target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            call = stub.Generate(greedy(prompt, 300), timeout=60)
            tokens = list((await call.read()).token_ids)
            os.killpg(service.process.pid, signal.SIGTERM)
            async for message in call:
                tokens.extend(message.token_ids)
        assert tokens == expected and len(tokens) == 300
        assert await asyncio.to_thread(service.process.wait, 30) == 0, service.log_text()
    finally:
        service.kill()


async def test_frames_the_client_cannot_read_stop_the_core_and_end_every_stream(
    tmp_path: Path, port: int
) -> None:
    """A reader that fails (a core of another version, a bug) must not leave streams without an end."""
    import msgspec

    tiny_model("mistral", tmp_path, seed=44)
    exits: list[int] = []
    client = await EngineClient.spawn(settings_for(tmp_path, port), on_exit=exits.append)
    try:
        queue = client.submit(Sequence("long", [5, 6, 7], SamplingParams(temperature=0.0, max_tokens=400)))
        first = await asyncio.wait_for(queue.get(), 30)
        assert first.tokens
        client._channel._decoder = msgspec.msgpack.Decoder(int)  # every next frame fails to decode
        while (event := await asyncio.wait_for(queue.get(), 30)).error is None:
            pass
        assert "exited" in event.error
        assert await wait_for(lambda: _true(bool(exits)), timeout=10) and exits[0] != 0
        with pytest.raises(Unavailable):
            client.submit(Sequence("after", [5], SamplingParams(max_tokens=1)))
    finally:
        await client.stop()


async def test_after_stop_requests_are_refused_and_aborts_are_dropped(tmp_path: Path, port: int) -> None:
    tiny_model("mistral", tmp_path, seed=45)
    client = await EngineClient.spawn(settings_for(tmp_path, port))
    queue = client.submit(Sequence("r", [5, 6, 7], SamplingParams(temperature=0.0, max_tokens=400)))
    assert (await asyncio.wait_for(queue.get(), 30)).tokens
    stopping = asyncio.create_task(client.stop())
    await asyncio.sleep(0)  # stop() has half-closed the socket
    client.abort("r")  # what the servicer does for a stream cancelled at the end of a drain: no error
    with pytest.raises(Unavailable):
        client.submit(Sequence("late", [5], SamplingParams(max_tokens=1)))
    assert await stopping == 0
    while (event := await asyncio.wait_for(queue.get(), 30)).finish is None and event.error is None:
        pass
    assert event.finish is Finish.ABORT or event.error is not None


async def _true(value: bool) -> bool:
    return value
