"""Service processes run on uvloop unless their settings say asyncio."""

from __future__ import annotations

import asyncio
import sys

import pytest

from clawdbot.shared import event_loop
from clawdbot.shared.config import ServiceSettings

if sys.platform == "win32":  # no uvloop wheels there, and pyproject leaves it out
    pytest.skip("uvloop does not exist on Windows", allow_module_level=True)

import uvloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_run_uses_the_loop_it_is_told() -> None:
    assert event_loop.run(_loop_type(), "uvloop") is uvloop.Loop
    plain = event_loop.run(_loop_type(), "asyncio")
    assert plain is not uvloop.Loop and issubclass(plain, asyncio.BaseEventLoop)


def test_uvloop_is_the_default_and_one_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().event_loop == "uvloop"
    monkeypatch.setenv("CLAWDBOT_EVENT_LOOP", "asyncio")
    assert ServiceSettings().event_loop == "asyncio"
    monkeypatch.setenv("CLAWDBOT_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        ServiceSettings()
