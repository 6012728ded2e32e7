"""The Plugins gRPC service in-process with the shop's plugins.yaml: one turn through every
kind over the wire, status codes for bad input, streamed filtering and tool calls."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
import zxingcpp
from PIL import Image

from clawdbot.services.plugins.manager import PluginManager
from clawdbot.services.plugins.server import PluginsService
from clawdbot.services.plugins.settings import EXAMPLE_PLUGINS_FILE, PluginsSettings
from clawdbot.shared.grpc_server import ServiceHost
from clawdbot.v1 import common_pb2, plugins_pb2, plugins_pb2_grpc

pytestmark = pytest.mark.asyncio(loop_scope="module")


def qr_data_url(text: str) -> str:
    image = Image.fromarray(
        np.array(zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode).to_image(scale=8))
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target() -> AsyncIterator[str]:
    """host:port of a Plugins service running in this process on the shop's plugins.yaml."""
    settings = PluginsSettings(port=0, plugins_file=EXAMPLE_PLUGINS_FILE, log_format="text", grace_seconds=1)
    manager = PluginManager(Path(EXAMPLE_PLUGINS_FILE))
    host = ServiceHost("plugins", settings)
    service = PluginsService(manager)
    host.add_service(
        "clawdbot.v1.Plugins", lambda s: plugins_pb2_grpc.add_PluginsServicer_to_server(service, s)
    )
    port = await host.start()
    await manager.start()
    await host.set_serving(True)
    yield f"127.0.0.1:{port}"
    await host.stop()
    await manager.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stub(target: str) -> AsyncIterator[plugins_pb2_grpc.PluginsStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield plugins_pb2_grpc.PluginsStub(channel)


def turn(session: str = "it-1") -> plugins_pb2.TurnContext:
    return plugins_pb2.TurnContext(tenant="shop", session_id=session, user="u1", turn_id="t1")


async def test_list_plugins_shows_the_twelve_kinds(stub: plugins_pb2_grpc.PluginsStub) -> None:
    reply = await stub.ListPlugins(plugins_pb2.ListPluginsRequest(), timeout=10)
    assert len({p.kind for p in reply.plugins}) == 12
    assert all(
        p.source == "builtin" or p.source.startswith("clawdbot.services.plugins.builtin.")
        for p in reply.plugins
    )


async def test_cli_lists_what_a_running_service_has_loaded(target: str) -> None:
    from click.testing import CliRunner

    from clawdbot.services.plugins.cli import plugins as plugins_cli

    result = await asyncio.to_thread(CliRunner().invoke, plugins_cli, ["list", "--target", target])
    assert result.exit_code == 0, result.output
    assert "faq_search" in result.output and "knowledge_graph" in result.output


async def test_an_order_status_turn_with_a_qr_code_photo(stub: plugins_pb2_grpc.PluginsStub) -> None:
    message = common_pb2.ChatMessage(
        role="user",
        parts=[
            common_pb2.ContentPart(text="这是我订单的二维码，帮我查一下到哪了，电话13812345678"),
            common_pb2.ContentPart(image_url=common_pb2.ImageUrl(url=qr_data_url("SO20261125001"))),
        ],
    )
    reply = await stub.Preprocess(plugins_pb2.PreprocessRequest(turn=turn(), messages=[message]), timeout=60)
    assert not reply.HasField("short_circuit")
    assert reply.facts["order_id"] == "SO20261125001"
    assert reply.facts["phone"] == "138****5678"
    assert "13812345678" not in reply.user_message.content and "SO20261125001" in reply.user_message.content
    assert [p.WhichOneof("part") for p in reply.user_message.parts] == ["text", "image_url"]
    assert reply.metadata["language"] == "zh" and reply.metadata["intent"] == "order_status"
    sources = {block.source: block for block in reply.context}
    assert "SF1420261123887" in sources["tool:lookup_order"].text
    assert sources["tool:lookup_order"].plugin == "shop_tools"
    assert "image:0" in sources
    assert {t.function.name for t in reply.tools} >= {"lookup_order", "track_parcel"}
    assert any("简体中文" in i for i in reply.instructions)
    assert {o.status for o in reply.outcomes} == {"ok"}
    assert {"entities", "pii_masked", "intent", "tool_called"} <= {e.type for e in reply.events}


async def test_a_known_question_is_answered_from_the_cache(stub: plugins_pb2_grpc.PluginsStub) -> None:
    message = common_pb2.ChatMessage(role="user", content="Hello!")
    reply = await stub.Preprocess(
        plugins_pb2.PreprocessRequest(turn=turn("it-2"), messages=[message]), timeout=30
    )
    assert reply.short_circuit.reason == "cache" and reply.short_circuit.plugin == "cache"
    assert "ClawShop" in reply.short_circuit.reply


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("data:image/png;base64,%%%broken", "malformed base64"),
        ("http://example.com/a.png", "not a data: URL"),
        ("data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"0" * 6_000_000).decode(), "larger than"),
    ],
)
async def test_bad_images_are_invalid_argument(
    stub: plugins_pb2_grpc.PluginsStub, url: str, detail: str
) -> None:
    message = common_pb2.ChatMessage(
        role="user",
        parts=[
            common_pb2.ContentPart(text="看图"),
            common_pb2.ContentPart(image_url=common_pb2.ImageUrl(url=url)),
        ],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Preprocess(plugins_pb2.PreprocessRequest(turn=turn(), messages=[message]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (caught.value.details() or "")


async def test_a_request_without_a_user_message_is_invalid(stub: plugins_pb2_grpc.PluginsStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Preprocess(plugins_pb2.PreprocessRequest(turn=turn()), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_postprocess_masks_filters_and_adds_the_disclaimer(stub: plugins_pb2_grpc.PluginsStub) -> None:
    request = plugins_pb2.PostprocessRequest(
        turn=plugins_pb2.TurnContext(tenant="shop", metadata={"language": "en"}),
        reply="Call me at 13912345678, this is the guaranteed lowest price: 3999 CNY.",
    )
    reply = await stub.Postprocess(request, timeout=10)
    assert (
        reply.reply
        == "Call me at 139****5678, this is the ***: 3999 CNY.\n\nPrices are as shown at checkout."
    )


async def test_filter_stream_masks_across_deltas(stub: plugins_pb2_grpc.PluginsStub) -> None:
    text = "请拨打13812345678联系快递，价格3999元。"

    async def requests() -> AsyncIterator[plugins_pb2.FilterStreamRequest]:
        yield plugins_pb2.FilterStreamRequest(start=plugins_pb2.FilterStreamStart(turn=turn("it-3")))
        for i in range(0, len(text), 2):
            yield plugins_pb2.FilterStreamRequest(delta=text[i : i + 2])

    out = [item async for item in stub.FilterStream(requests(), timeout=30)]
    joined = "".join(item.delta for item in out)
    assert joined == "请拨打138****5678联系快递，价格3999元。\n\n价格以下单页面为准。"
    assert all("1381234" not in item.delta for item in out)


async def test_filter_stream_needs_start_first(stub: plugins_pb2_grpc.PluginsStub) -> None:
    async def requests() -> AsyncIterator[plugins_pb2.FilterStreamRequest]:
        yield plugins_pb2.FilterStreamRequest(delta="hi")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [item async for item in stub.FilterStream(requests(), timeout=10)]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_invoke_tool_runs_lookup_order_and_reports_bad_calls(
    stub: plugins_pb2_grpc.PluginsStub,
) -> None:
    call = common_pb2.ToolCall(
        id="call-1",
        type="function",
        function=common_pb2.FunctionCall(name="lookup_order", arguments='{"order_id": "SO20261125003"}'),
    )
    reply = await stub.InvokeTool(plugins_pb2.InvokeToolRequest(turn=turn(), call=call), timeout=10)
    assert (reply.tool_call_id, reply.plugin, reply.is_error) == ("call-1", "shop_tools", False)
    assert json.loads(reply.content)["status_en"] == "awaiting payment"
    call.function.arguments = '{"order_id": "SO 2026/11"}'  # outside the schema's pattern
    bad = await stub.InvokeTool(plugins_pb2.InvokeToolRequest(turn=turn(), call=call), timeout=10)
    assert bad.is_error and "invalid arguments" in bad.content
    call.function.arguments = '{"order_id": "12"}'  # well-formed but no order: looked up, not found
    missing = await stub.InvokeTool(plugins_pb2.InvokeToolRequest(turn=turn(), call=call), timeout=10)
    assert not missing.is_error and json.loads(missing.content)["found"] is False
    call.function.arguments = "{not json"
    assert (await stub.InvokeTool(plugins_pb2.InvokeToolRequest(turn=turn(), call=call), timeout=10)).is_error
    call.function.name = "format_disk"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.InvokeTool(plugins_pb2.InvokeToolRequest(turn=turn(), call=call), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
