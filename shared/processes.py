"""Start services as real processes and wait, bounded, until they serve.

Used by `clawdbot up` and by the integration tests: the same code that an operator relies on
is the code the tests exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LISTEN_PORTS = range(20000, 32768)  # below Linux's default ephemeral range (32768-60999)
_handed_out: set[int] = set()  # ports `free_port` returned in this process


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now, for a process that binds it a moment later.

    Drawn below the kernel's ephemeral range: a port the kernel hands out by `bind(0)` is also one
    it hands to outgoing connections, which took such a port between this check and the service's
    bind (a mesh start failed in CI that way). Never the same port twice in one process: a mesh's
    plan draws a dozen ports before any is bound, and two equal draws (~0.5% a plan) made a service
    fail to bind in CI. Falls back to `bind(0)` if the range is exhausted.
    """
    for port in random.sample(LISTEN_PORTS, 64):
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def health_status(target: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The health status of `service` at `target`, or None when it does not answer."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
        return int(reply.status)


async def wait_serving(
    target: str, timeout: float, service: str = "", process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll gRPC health until SERVING; raise TimeoutError after `timeout` seconds, or at once if `process` exits."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process for {target} exited with code {process.returncode} before serving")
        if (
            await health_status(target, service, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            == health_pb2.HealthCheckResponse.SERVING
        ):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{target} not SERVING after {timeout:.0f}s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class ServiceProcess:
    """One `clawdbot serve <service>` child process with its own log file."""

    def __init__(
        self,
        service: str,
        port: int,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.service = service
        self.port = port
        self.host = host
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "clawdbot.shared.cli",
            "serve",
            self.service,
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self) -> ServiceProcess:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(), env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    async def wait_serving(self, timeout: float = 60.0) -> None:
        await wait_serving(self.target, timeout, process=self.process)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the service drains), then SIGKILL if it outlives `timeout`; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_records(self, msg: str) -> list[dict[str, Any]]:
        """The JSON log lines (the default format) whose message is `msg`, in order."""
        records = (json.loads(line) for line in self.log_text().splitlines() if line.startswith("{"))
        return [record for record in records if record.get("msg") == msg]
