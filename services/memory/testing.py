"""Real things for tests and local runs: a private redis-server, and the memory service in-process.

Integration tests (ours and the gateway's) use these so that they exercise the same Redis
settings that `deploy/redis/redis.conf` ships, on free ports, never the machine's own Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis as syncredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from clawdbot.services.memory.app import MemoryApp, build_app
from clawdbot.services.memory.settings import MemorySettings
from clawdbot.services.memory.store import MemoryStore
from clawdbot.shared.channels import create_channel
from clawdbot.shared.processes import free_port
from clawdbot.v1 import common_pb2, memory_pb2, memory_pb2_grpc

# The deployment's config, found from the source tree (absent from an installed wheel: then defaults).
DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "redis" / "redis.conf"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer:
    """One redis-server process on a loopback port with its data (AOF) in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed (scripts/ensure-system-packages.sh installs it)"
            )
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        conf = [str(DEPLOY_CONF)] if DEPLOY_CONF.exists() else []
        return [
            self.binary,
            *conf,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """PING answers (and the AOF is loaded) within `timeout`, or TimeoutError."""
        deadline = time.monotonic() + timeout
        client = aioredis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=1
        )
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {self.log_tail()}"
                    )
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                    if await client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {self.port} not ready after {timeout}s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def wait_ready_blocking(self, timeout: float = 20.0) -> None:
        """`wait_ready` for code without an event loop (module-scoped pytest fixtures)."""
        deadline = time.monotonic() + timeout
        client = syncredis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=1
        )
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {self.log_tail()}"
                    )
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError, OSError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {self.port} not ready after {timeout}s")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final fsync; what survives is what Redis wrote before replying."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 20) -> str:
        log = self.data_dir / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@asynccontextmanager
async def memory_in_process(
    settings: MemorySettings, store: MemoryStore | None = None
) -> AsyncIterator[tuple[MemoryApp, str]]:
    """The memory service on a free port of this event loop; yields the app and its target."""
    app = build_app(settings, store)
    port = await app.host.start()
    try:
        await app.startup()
        await app.host.set_serving(True)
        yield app, f"127.0.0.1:{port}"
    finally:
        await app.host.stop()
        await app.shutdown()


def chat_message(
    message_id: str, role: str = "user", text: str = "", tokens: int = 1, **fields: Any
) -> common_pb2.ChatMessage:
    """A ChatMessage with the fields tests care about; `fields` passes the rest (parts, tool_calls...)."""
    return common_pb2.ChatMessage(
        message_id=message_id,
        role=role,
        content=text or f"text of {message_id}",
        token_count=tokens,
        **fields,
    )


def session_key(tenant: str, session_id: str) -> memory_pb2.SessionKey:
    return memory_pb2.SessionKey(tenant=tenant, session_id=session_id)


def settings_for_tests(redis_url: str | None, **overrides: Any) -> MemorySettings:
    """Settings for an in-process service in tests: any free port, quick health checks, short drain."""
    values: dict[str, Any] = {
        "port": 0,
        "redis_url": redis_url,
        "grace_seconds": 0.5,
        "health_interval_s": 0.2,
        "log_level": "WARNING",
        **overrides,
    }
    return MemorySettings(**values)


@dataclass(frozen=True)
class Backend:
    """Which store a test runs against: "embedded", or "redis" with the URL of a RedisServer."""

    name: str
    redis_url: str | None


@dataclass
class Memory:
    """A client of an in-process memory service, with a tenant of its own so tests never collide."""

    stub: memory_pb2_grpc.MemoryStub
    backend: str
    tenant: str
    app: MemoryApp
    redis_url: str | None

    def key(self, session_id: str = "s1") -> memory_pb2.SessionKey:
        return session_key(self.tenant, session_id)


@asynccontextmanager
async def open_memory(backend: Backend, **overrides: Any) -> AsyncIterator[Memory]:
    async with memory_in_process(settings_for_tests(backend.redis_url, **overrides)) as (app, target):
        channel = create_channel(target)
        try:
            tenant = f"t-{uuid.uuid4().hex[:12]}"
            yield Memory(memory_pb2_grpc.MemoryStub(channel), backend.name, tenant, app, backend.redis_url)
        finally:
            await channel.close()
