"""Inference unit tests run tiny models: one torch thread each (see `torch_threads`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clawdbot.services.inference.testing import torch_threads


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield
