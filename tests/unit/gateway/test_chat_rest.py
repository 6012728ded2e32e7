"""The REST face of the turn pipeline against scripted services: OpenAI shapes, streaming,
stop strings across deltas, sessions, tools, cancellation and errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from clawdbot.v1 import common_pb2

from .conftest import Edge

USER = [{"role": "user", "content": "hi"}]


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": USER, **extra}


async def sse_events(resp: aiohttp.ClientResponse) -> list[Any]:
    events: list[Any] = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_non_streaming_reply_has_openai_shape(edge: Edge) -> None:
    status, body = await edge.post("/v1/chat/completions", chat())
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there!"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len("Hello there!")
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_streaming_sends_role_then_deltas_then_finish_and_done(edge: Edge) -> None:
    async with edge.http.post(
        edge.url + "/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True})
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello there!"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12


async def test_stop_string_spanning_deltas_is_cut_and_never_sent(edge: Edge) -> None:
    edge.script.reply = "abc END xyz"
    async with edge.http.post(
        edge.url + "/v1/chat/completions", json=chat(stream=True, stop=[" END"])
    ) as resp:
        events = await sse_events(resp)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1] if c["choices"])
    assert text == "abc"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_stop_prefix_that_does_not_complete_is_released(edge: Edge) -> None:
    edge.script.reply = "a <E b"
    _, body = await edge.post("/v1/chat/completions", chat(stop=["<END>"]))
    assert body["choices"][0]["message"]["content"] == "a <E b"


async def test_stream_filter_applies_to_deltas(edge: Edge) -> None:
    edge.script.reply = "oh darn it"
    _, body = await edge.post("/v1/chat/completions", chat())
    assert body["choices"][0]["message"]["content"] == "oh **** it"


async def test_a_filter_stop_ends_generation_and_keeps_the_filters_last_words(edge: Edge) -> None:
    edge.script.reply = "one two three four five six seven eight nine ten " * 20
    edge.script.delay_s = 0.002
    edge.script.filter_limit = 20
    _, body = await edge.post("/v1/chat/completions", chat(session_id="cut"))
    assert body["choices"][0]["message"]["content"] == "one two three four f [cut]"
    assert body["choices"][0]["finish_reason"] == "content_filter"
    for _ in range(100):
        if edge.script.cancelled:
            break
        await asyncio.sleep(0.02)
    assert edge.script.cancelled == 1  # generation was stopped, not run to the end
    assert edge.script.sessions[("default", "cut")][-1].content == "one two three four f [cut]"


async def test_a_filter_that_ends_its_stream_at_once_after_stop_is_not_an_error(edge: Edge) -> None:
    edge.script.reply = "word " * 400  # the model keeps writing fast while the filter has gone
    edge.script.filter_limit = 30
    edge.script.filter_note = ""
    for _ in range(15):
        async with edge.http.post(edge.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
            events = await sse_events(resp)
        assert not [e for e in events if isinstance(e, dict) and "error" in e], events[-3:]
        assert events[-2]["choices"][0]["finish_reason"] == "content_filter"


async def test_postprocess_addition_is_streamed_and_a_rewrite_is_announced(edge: Edge) -> None:
    edge.script.post_suffix = " (prices at checkout)"
    async with edge.http.post(edge.url + "/v1/chat/completions", json=chat(stream=True)) as resp:
        events = await sse_events(resp)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in events[:-1] if c["choices"])
    assert text == "Hello there! (prices at checkout)"
    edge.script.post_suffix = ""
    edge.script.post_rewrite = "Hello, [masked]!"
    async with edge.http.post(
        edge.url + "/v1/chat/completions", json=chat(stream=True, session_id="rw")
    ) as resp:
        events = await sse_events(resp)
    rewritten = [e for c in events[:-1] for e in c.get("events", []) if e["type"] == "reply_rewritten"]
    assert rewritten[0]["data"]["reply"] == "Hello, [masked]!"
    assert edge.script.sessions[("default", "rw")][-1].content == "Hello, [masked]!"
    _, body = await edge.post("/v1/chat/completions", chat())
    assert body["choices"][0]["message"]["content"] == "Hello, [masked]!"


async def test_session_second_turn_sees_the_first(edge: Edge) -> None:
    status, _ = await edge.post(
        "/v1/chat/completions", chat(session_id="s1", messages=[{"role": "user", "content": "I am Ann"}])
    )
    assert status == 200
    await edge.post(
        "/v1/chat/completions",
        {"model": "fake-model", "messages": [{"role": "user", "content": "who am I?"}]},
        headers={"X-Session-Id": "s1"},
    )
    assert "I am Ann" in edge.script.prompts[-1] and "Hello there!" in edge.script.prompts[-1]
    async with edge.http.get(edge.url + "/v1/sessions/s1/messages") as resp:
        messages = (await resp.json())["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert all(m["token_count"] > 0 for m in messages)


async def test_plugin_context_goes_into_the_system_message_and_sources(edge: Edge) -> None:
    edge.script.context_blocks = [
        common_pb2.ContextBlock(text="Returns within 7 days", source="faq.md#returns", plugin="faq")
    ]
    _, body = await edge.post("/v1/chat/completions", chat())
    assert body["sources"][0]["source"] == "faq.md#returns"
    assert (
        edge.script.prompts[-1].startswith("<system>") and "Returns within 7 days" in edge.script.prompts[-1]
    )


async def test_short_circuit_reply_skips_the_model(edge: Edge) -> None:
    edge.script.short_circuit = "A human will contact you."
    _, body = await edge.post("/v1/chat/completions", chat())
    assert body["choices"][0]["message"]["content"] == "A human will contact you."
    assert body["events"][0]["type"] == "handoff"
    assert edge.script.started == 0


async def test_client_tool_call_is_returned_as_tool_calls(edge: Edge) -> None:
    edge.script.reply = '<tool_call>{"name": "get_order", "arguments": {"id": "A1"}}</tool_call>'
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]
    _, body = await edge.post("/v1/chat/completions", chat(tools=tools))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_order" and json.loads(call["function"]["arguments"]) == {
        "id": "A1"
    }


async def test_plugin_tool_runs_inside_the_turn(edge: Edge) -> None:
    edge.script.plugin_tools = [
        common_pb2.ToolSpec(type="function", function=common_pb2.FunctionSpec(name="track"))
    ]
    edge.script.reply = '<tool_call>{"name": "track", "arguments": {}}</tool_call>'
    _, body = await edge.post("/v1/chat/completions", chat())
    # the fake model answers the same tool call every round: the loop is bounded
    assert edge.script.tool_invocations == ["track"] * 2
    assert '{"status": "shipped"}' in edge.script.prompts[-1]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


async def test_logprobs_and_token_ids(edge: Edge) -> None:
    _, body = await edge.post("/v1/chat/completions", chat(logprobs=True, return_token_ids=True))
    content = body["choices"][0]["logprobs"]["content"]
    assert "".join(c["token"] for c in content) == "Hello there!"
    assert body["choices"][0]["token_ids"][:5] == [ord(c) for c in "Hello"]


async def test_dropping_the_stream_aborts_inference_and_stores_nothing(edge: Edge) -> None:
    edge.script.reply = "x, " * 200  # clauses: a verified reply streams clause by clause
    edge.script.delay_s = 0.01
    async with edge.http.post(
        edge.url + "/v1/chat/completions", json=chat(stream=True, session_id="gone")
    ) as resp:
        got = 0
        async for raw in resp.content:
            got += raw.startswith(b"data: ")
            if got >= 5:
                break
        resp.close()  # drop the connection, as a closed browser tab does
    for _ in range(200):
        if edge.script.cancelled:
            break
        await asyncio.sleep(0.02)
    assert edge.script.cancelled == 1 and edge.script.finished == 0
    assert edge.script.appends == 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "fake-model", "messages": []}, 400, "messages"),
        ({"model": "fake-model", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
        (chat(temperature="hot"), 400, "temperature"),
        (chat(max_tokens=100_000), 400, "max_tokens"),
        (chat(model="gpt-9"), 404, "model"),
        (chat(n=3), 400, "n"),
        (chat(bogus=1), 400, "bogus"),
        ({"messages": USER}, 400, "model"),
    ],
)
async def test_bad_input_gets_openai_error(edge: Edge, body: dict[str, Any], status: int, param: str) -> None:
    got, err = await edge.post("/v1/chat/completions", body)
    assert got == status
    assert set(err["error"]) == {"message", "type", "param", "code"}
    assert err["error"]["param"] == param


async def test_malformed_json_is_400(edge: Edge) -> None:
    async with edge.http.post(
        edge.url + "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 400
        assert "parse the JSON" in (await resp.json())["error"]["message"]


async def test_upstream_error_keeps_its_meaning(edge: Edge) -> None:
    import grpc

    edge.script.generate_error = grpc.StatusCode.UNAVAILABLE
    status, err = await edge.post("/v1/chat/completions", chat())
    assert status == 503 and err["error"]["type"] == "service_unavailable"


async def test_generation_that_dies_before_any_output_is_run_again(edge: Edge) -> None:
    edge.script.fail_generates = 1
    edge.script.reply = "all good"  # the fake filter holds text until a space: nothing was shown
    status, body = await edge.post("/v1/chat/completions", chat())
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "all good"
    assert edge.script.started == 2


async def test_completions_text_and_token_prompt(edge: Edge) -> None:
    status, body = await edge.post(
        "/v1/completions", {"model": "fake-model", "prompt": "Say", "max_tokens": 5, "echo": True}
    )
    assert status == 200
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "SayHello"
    assert body["choices"][0]["finish_reason"] == "length"
    status, body = await edge.post(
        "/v1/completions", {"model": "fake-model", "prompt": [83, 97], "max_tokens": 3}
    )
    assert status == 200 and body["choices"][0]["text"] == "Hel"


async def test_models_and_session_routes(edge: Edge) -> None:
    async with edge.http.get(edge.url + "/v1/models") as resp:
        assert (await resp.json())["data"][0]["id"] == "fake-model"
    async with edge.http.get(edge.url + "/v1/sessions/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"
    await edge.post("/v1/chat/completions", chat(session_id="del"))
    async with edge.http.delete(edge.url + "/v1/sessions/del") as resp:
        assert (await resp.json())["deleted"] is True
    async with edge.http.get(edge.url + "/readyz") as resp:
        assert resp.status == 200
    async with edge.http.get(edge.url + "/metrics") as resp:
        text = await resp.text()
        assert "clawdbot_gateway_http_requests_total" in text
        assert "clawdbot_gateway_time_to_first_token_seconds" in text


async def wait_summary(edge: Edge, key: tuple[str, str], needle: str) -> str:
    for _ in range(100):  # the refresh runs after the reply, off the request's path
        summary = edge.script.summaries.get(key)
        if summary is not None and needle in summary.text:
            return summary.covers_through_message_id
        await asyncio.sleep(0.02)
    raise AssertionError(f"no summary with {needle!r}: {edge.script.summaries.get(key)}")


async def test_turns_that_fall_out_of_the_budget_are_folded_into_the_summary(edge: Edge) -> None:
    edge.script.keep_messages = 2  # memory's budget holds only the newest turn
    key = ("default", "long")
    for text in ("first question about shoes", "second about bags", "third about hats"):
        status, _ = await edge.post(
            "/v1/chat/completions", chat(session_id="long", messages=[{"role": "user", "content": text}])
        )
        assert status == 200
    covers = await wait_summary(edge, key, "user: first question about shoes")
    stored = edge.script.sessions[key]
    assert covers == stored[1].message_id  # through turn 1's reply
    await edge.post(
        "/v1/chat/completions", chat(session_id="long", messages=[{"role": "user", "content": "and socks?"}])
    )
    assert "Summary of the earlier conversation" in edge.script.prompts[-1]
    assert "first question about shoes" in edge.script.prompts[-1]
    covers = await wait_summary(edge, key, "user: second about bags")
    assert covers == stored[3].message_id
    assert "first question about shoes" in edge.script.summaries[key].text  # the old summary is kept
