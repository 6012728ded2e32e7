"""Redis dies while appends are in flight: acknowledged appends survive, and the service heals itself.

The memory service runs as a real `clawdbot serve memory --redis-url ...` process; redis-server
runs with the deployment's config (AOF, appendfsync everysec) and is killed with SIGKILL, then
restarted on the same AOF directory and port.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from clawdbot.services.memory.testing import RedisServer, chat_message, session_key
from clawdbot.shared.processes import ServiceProcess, free_port, health_status
from clawdbot.v1 import memory_pb2, memory_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
APPENDERS = 8


async def until(what: str, condition: Callable[[], bool | Awaitable[bool]], timeout: float) -> None:
    """Poll `condition` (plain or async) until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        await asyncio.sleep(0.05)


async def test_acknowledged_appends_survive_a_redis_kill_and_health_follows_redis(
    tmp_path: Path, service_process: list[ServiceProcess]
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        await redis.wait_ready()
        memory = ServiceProcess(
            "memory",
            free_port(),
            ["--redis-url", redis.url, "--health-interval", "0.2"],
            env={"CLAWDBOT_MEMORY_REDIS_RETRIES": "1", "CLAWDBOT_MEMORY_GRACE_SECONDS": "1"},
            log_path=tmp_path / "memory.log",
        ).start()
        service_process.append(memory)
        await memory.wait_serving(60)
        assert memory.process is not None
        pid = memory.process.pid
        key = session_key("acme", "fault")
        acked: list[str] = []
        failures: list[grpc.StatusCode] = []
        stop = asyncio.Event()

        # A plain channel: no transparent retries, so every ack and every failure is the service's own.
        async with grpc.aio.insecure_channel(memory.target) as channel:
            stub = memory_pb2_grpc.MemoryStub(channel)

            async def appender(w: int) -> None:
                """Turns of two messages; a failed turn is retried with the same ids, as the gateway would."""
                n = 0
                while not stop.is_set():
                    turn = f"w{w}-{n}"
                    n += 1
                    request = memory_pb2.AppendRequest(
                        key=key,
                        messages=[chat_message(f"{turn}-user"), chat_message(f"{turn}-bot", "assistant")],
                        max_messages=100_000,
                    )
                    while not stop.is_set():
                        try:
                            await stub.Append(request, timeout=5)
                        except grpc.aio.AioRpcError as err:
                            failures.append(err.code())
                            await asyncio.sleep(0.05)
                        else:
                            acked.append(turn)
                            break

            async def health() -> int | None:
                return await health_status(memory.target, timeout=1)

            tasks = [asyncio.create_task(appender(w)) for w in range(APPENDERS)]
            try:
                await until("200 appends acknowledged", lambda: len(acked) >= 200, 30)
                redis.kill()
                killed_at = len(acked)
                await until("NOT_SERVING once Redis is gone", lambda: _is(health, NOT_SERVING), 15)
                await until(
                    "appends refused while Redis is gone",
                    lambda: len(failures) >= APPENDERS,
                    15,
                )
                assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, failures
                assert len(acked) - killed_at <= APPENDERS  # at most the calls already answered by Redis

                redis = RedisServer(redis.data_dir, port=redis.port).start()  # same AOF, same port
                await redis.wait_ready()
                await until("SERVING again without a restart", lambda: _is(health, SERVING), 20)
                assert memory.process.poll() is None and memory.process.pid == pid
                resumed_from = len(acked)
                await until(
                    "appends acknowledged again",
                    lambda: len(acked) >= resumed_from + 50,
                    20,
                )
            finally:
                stop.set()
                await asyncio.gather(*tasks)

            session = await stub.GetSession(memory_pb2.GetSessionRequest(key=key), timeout=10)
        stored = [m.message_id for m in session.messages]
        assert len(stored) == len(set(stored)), "a message was stored twice"
        missing = {f"{turn}-{who}" for turn in acked for who in ("user", "bot")} - set(stored)
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        # An append is all or nothing, across the crash too: a turn's two messages are stored together.
        turns = [i.rsplit("-", 1)[0] for i in stored]
        assert stored == [f"{t}-{who}" for t in dict.fromkeys(turns) for who in ("user", "bot")]
        assert "store unreachable" in memory.log_text()
    finally:
        redis.stop()


async def _is(probe: Callable[[], Awaitable[int | None]], status: int) -> bool:
    return await probe() == status
