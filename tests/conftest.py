"""Fixtures every test can use. Integration fixtures start real processes on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawdbot.shared.processes import ServiceProcess, free_port

# Tests share two cores with everything else: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run where CUDA is present and are skipped elsewhere (a platform condition)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Collects ServiceProcess objects a test starts and stops them all afterwards (SIGTERM, then SIGKILL)."""
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(timeout=10)
