"""The whole mesh, for real: a tiny random model, redis-server on a free port, every service a
separate process, two inference replicas, Envoy in front; started once per test session through
`clawdbot up`'s own `Mesh` class, with every process exporting its spans to its own file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawdbot.gateway.up import Mesh, MeshOptions
from clawdbot.shared.processes import free_port

from .tiny_model import build_tiny_model

API_KEY = "sk-e2e-shop"
BURST_KEY = "sk-e2e-burst"  # a key with a tiny per-minute limit, for the rate-limit test
BURST_RPM = 5


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port (never the system one on 6379)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/ensure-system-packages.sh installs it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def mesh(tiny_model: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    logs = tmp_path_factory.mktemp("mesh-logs")
    traces = tmp_path_factory.mktemp("traces")
    options = MeshOptions(
        http_port=free_port(),
        grpc_port=free_port(),
        model_dir=tiny_model,
        replicas=2,
        redis_url=redis_url,
        log_dir=logs,
        trace_dir=traces,
        ready_timeout=240,
        gateway_env={
            "CLAWDBOT_GATEWAY_API_KEYS": f'{{"{API_KEY}": "shop", "{BURST_KEY}": "burst"}}',
            "CLAWDBOT_GATEWAY_KEY_REQUESTS_PER_MINUTE": f'{{"{BURST_KEY}": {BURST_RPM}}}',
            "CLAWDBOT_GATEWAY_MAX_BODY_BYTES": str(4 * 1024 * 1024),
        },
    )
    started = Mesh(options)
    started.start()
    try:
        asyncio.run(started.wait_ready())
    except BaseException:
        started.stop()
        raise
    yield started
    started.stop()
