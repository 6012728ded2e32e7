"""tool: schema-checked calls to Python and HTTP tools; outbound HTTP only to allowed public hosts.

The HTTP tools talk to a real aiohttp server on 127.0.0.1 that the test starts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clawdbot.services.plugins.base import PluginContext
from clawdbot.services.plugins.builtin.tool import DeclaredTools, ToolSettings
from clawdbot.services.plugins.config import PluginConfigError
from clawdbot.services.plugins.loader import load_plugin_set
from clawdbot.services.plugins.types import Turn
from clawdbot.shared.processes import free_port

from .conftest import SHOP, user_turn

ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "pattern": r"^SO\d{11}$"}},
    "required": ["order_id"],
    "additionalProperties": False,
}


@pytest.fixture
async def server() -> AsyncIterator[str]:
    """http://127.0.0.1:PORT with an order API, redirects out of bounds, a huge and a hanging endpoint."""
    never = asyncio.Event()

    async def order(request: web.Request) -> web.Response:
        return web.json_response({"order_id": request.query["order_id"], "status": "shipped"})

    def redirect(to: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPFound(to.replace("PORT", str(request.url.port)))

        return handler

    async def huge(request: web.Request) -> web.Response:
        return web.Response(text="x" * 100_000)

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/order", order)
    app.router.add_post("/order", order_post)
    app.router.add_get("/to-order", redirect("/order?order_id=SO20261125002"))
    app.router.add_get("/to-evil", redirect("http://evil.example/steal"))
    app.router.add_get("/to-localhost", redirect("http://localhost:PORT/order?order_id=SO20261125002"))
    app.router.add_get("/to-metadata", redirect("http://169.254.169.254/latest/meta-data"))
    app.router.add_get("/huge", huge)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    never.set()
    await runner.cleanup()


async def order_post(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"order_id": body["order_id"], "status": "paid", "via": "POST"})


def make_tools(
    base: str, path: str = "/order", *, private: bool = True, hosts: list[str] | None = None, **tool: Any
) -> DeclaredTools:
    settings = ToolSettings.model_validate(
        {
            "allowed_hosts": hosts if hosts is not None else ["127.0.0.1", "169.254.169.254"],
            "allowed_private_networks": ["127.0.0.0/8"] if private else [],
            "max_response_bytes": 50_000,
            "tools": [
                {
                    "name": "order_api",
                    "description": "order status over HTTP",
                    "http": {"url": base + path, "method": tool.pop("method", "GET")},
                    "parameters": tool.pop("parameters", {"type": "object"}),
                    "timeout_s": tool.pop("timeout_s", 5),
                }
            ],
        }
    )
    return DeclaredTools("tools", settings, PluginContext(Path(".")))


async def call(tools: DeclaredTools, **arguments: Any) -> tuple[Any, bool]:
    outcome = await tools.invoke("order_api", arguments, Turn())
    await tools.close()
    return json.loads(outcome.content), outcome.is_error


async def test_http_tool_calls_an_allowed_host_with_query_or_json(server: str) -> None:
    assert await call(make_tools(server, parameters=ORDER_SCHEMA), order_id="SO20261125001") == (
        {"order_id": "SO20261125001", "status": "shipped"},
        False,
    )
    body, error = await call(make_tools(server, method="POST"), order_id="SO20261125003")
    assert (body["via"], error) == ("POST", False)


async def test_redirects_within_the_allow_list_are_followed(server: str) -> None:
    body, error = await call(make_tools(server, "/to-order"))
    assert not error and body["order_id"] == "SO20261125002"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/to-evil", "host 'evil.example' is not on the allow-list"),
        ("/to-localhost", "host 'localhost' is not on the allow-list"),
        ("/to-metadata", "address 169.254.169.254 is private or reserved"),
    ],
)
async def test_redirects_out_of_bounds_are_refused(server: str, path: str, reason: str) -> None:
    body, error = await call(make_tools(server, path))
    assert error and body["error"] == f"refused: {reason}"


async def test_private_addresses_are_refused_unless_allowed(server: str) -> None:
    with pytest.raises(ValueError, match=r"address 127\.0\.0\.1 is private or reserved"):
        make_tools(server, private=False)
    by_name = server.replace("127.0.0.1", "localhost")
    body, error = await call(make_tools(by_name, private=False, hosts=["localhost"]))
    assert error and "localhost resolves only to private or reserved addresses" in body["error"]


async def test_hosts_outside_the_allow_list_are_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "plugins.yaml").write_text(
        "plugins:\n  - name: tools\n    kind: tool\n    config:\n      allowed_hosts: [api.clawshop.example]\n"
        "      tools:\n        - {name: t, description: d, http: {url: 'http://10.0.0.8/x'}}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        PluginConfigError, match=r"plugin 'tools'.*host '10\.0\.0\.8' is not on the allow-list"
    ):
        load_plugin_set(tmp_path / "plugins.yaml")


async def test_arguments_are_validated_against_the_schema(server: str) -> None:
    body, error = await call(make_tools(server, parameters=ORDER_SCHEMA), order_id="12345")
    assert error and "invalid arguments at order_id" in body["error"]
    body, error = await call(make_tools(server, parameters=ORDER_SCHEMA), order_id="SO20261125001", extra=1)
    assert error and "Additional properties" in body["error"]


async def test_huge_responses_and_hanging_endpoints_are_errors(server: str) -> None:
    body, error = await call(make_tools(server, "/huge"))
    assert error and "larger than 50000 bytes" in body["error"]
    body, error = await call(make_tools(server, "/hang", timeout_s=0.3))
    assert error and "did not answer within 0.3s" in body["error"]


async def test_python_tool_looks_up_shop_orders(shop_context: PluginContext) -> None:
    plugin_set = load_plugin_set(SHOP / "plugins.yaml")
    tools = plugin_set.find("shop_tools")
    assert tools is not None
    outcome = await tools.plugin.invoke("lookup_order", {"order_id": "SO20261125007"}, Turn())
    result = json.loads(outcome.content)
    assert (
        result["status"] == "refunded"
        and result["status_en"] == "refunded"
        and result["status_zh"] == "已退款"
    )
    assert "contact_phone" not in result
    missing = json.loads(
        (await tools.plugin.invoke("lookup_order", {"order_id": "SO20991231999"}, Turn())).content
    )
    assert missing["found"] is False
    english = await tools.plugin.preprocess(user_turn("where is SO20261125008?"))
    assert english.context == []  # no order_id fact yet: the entity plugin runs first in a real turn
    state = user_turn("where is it?")
    state.facts["order_id"] = "SO20261125008"
    state.metadata["intent"] = "order_status"  # the shop looks orders up for order questions only
    result2 = await tools.plugin.preprocess(state)
    block = result2.context[0]
    assert "ZT7812026112201" in block.text and block.score == 1.0  # named in this very turn
    assert (
        block.key_facts == ["shipped, in transit", "ZT7812026112201"] or "ZT7812026112201" in block.key_facts
    )
    assert "ZT7812026112201" in block.answer and '"answer"' not in block.text  # the model reads the data
    state.metadata["intent"] = "return_refund"
    assert (await tools.plugin.preprocess(state)).context == []
