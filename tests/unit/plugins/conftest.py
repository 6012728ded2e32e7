"""Fixtures for the plugin tests: the shop's plugins, ready-made turns, the third-party package."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from clawdbot.services.plugins.base import PluginContext
from clawdbot.services.plugins.loader import PluginSet, load_plugin_set
from clawdbot.services.plugins.types import ImageInput, InputState, Message, Turn

REPO = Path(__file__).resolve().parents[3]
SHOP = REPO / "examples" / "shop"


@pytest.fixture(scope="session")
def shop_context() -> PluginContext:
    return PluginContext(SHOP, SHOP / "plugins.yaml")


@pytest.fixture(scope="session")
def fixture_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test plugin package installed with pip into a folder on sys.path (entry points included)."""
    spec = importlib.util.spec_from_file_location(
        "fixture_install", REPO / "tests" / "plugin_fixture_pkg" / "install.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    work = tmp_path_factory.mktemp("fixture_pkg")
    target = module.install(work / "site", work)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("clawdbot_fixture_plugins")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def shop_set() -> Iterator[PluginSet]:
    """The shop's plugins.yaml, loaded and set up once per module."""
    plugin_set = load_plugin_set(SHOP / "plugins.yaml")
    asyncio.run(plugin_set.setup())
    yield plugin_set
    asyncio.run(plugin_set.close())


def plugin(plugin_set: PluginSet, name: str) -> Any:
    found = plugin_set.find(name)
    assert found is not None, name
    return found.plugin


def user_turn(
    text: str, *, images: Sequence[str] = (), tenant: str = "shop", session: str = "s1", language: str = ""
) -> InputState:
    metadata = {"language": language} if language else {}
    image_inputs = [ImageInput(url, i) for i, url in enumerate(images)]
    return InputState(
        turn=Turn(tenant=tenant, session_id=session, metadata=metadata),
        messages=[Message("user", text, tuple(image_inputs))],
        text=text,
        images=image_inputs,
    )
