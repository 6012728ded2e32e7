"""The pipeline's `ChatResponse` messages in OpenAI's exact JSON shapes: stream chunks, whole
completions, and the `error` object. Clawdbot's extras (`sources`, `events`, `session_id`,
`token_ids`) are added as extra keys, which OpenAI clients ignore.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clawdbot.v1 import chat_pb2, common_pb2

FINISH = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_ABORT: "stop",
    common_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


def finish_reason(value: int) -> str | None:
    return FINISH.get(value)  # type: ignore[call-overload]


def usage_json(usage: common_pb2.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def _token_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def logprobs_json(positions: Iterable[common_pb2.PositionLogprobs]) -> list[dict[str, Any]]:
    return [
        {
            "token": p.chosen.token,
            "logprob": p.chosen.logprob,
            "bytes": _token_bytes(p.chosen.token),
            "top_logprobs": [
                {"token": t.token, "logprob": t.logprob, "bytes": _token_bytes(t.token)} for t in p.top
            ],
        }
        for p in positions
    ]


def tool_calls_json(calls: Iterable[common_pb2.ToolCall], *, indexed: bool) -> list[dict[str, Any]]:
    out = []
    for i, call in enumerate(calls):
        item: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.function.name, "arguments": call.function.arguments},
        }
        if indexed:
            item["index"] = i
        out.append(item)
    return out


def sources_json(blocks: Iterable[common_pb2.ContextBlock]) -> list[dict[str, Any]]:
    return [
        {"text": b.text, "source": b.source, "plugin": b.plugin, "title": b.title, "score": b.score}
        for b in blocks
    ]


def events_json(events: Iterable[common_pb2.Event]) -> list[dict[str, Any]]:
    return [{"type": e.type, "source": e.source, "message": e.message, "data": dict(e.data)} for e in events]


def chunk_json(msg: chat_pb2.ChatResponse, *, include_usage: bool) -> dict[str, Any]:
    """One `chat.completion.chunk`."""
    choices = []
    for d in msg.choices:
        delta: dict[str, Any] = {}
        if d.role:
            delta["role"] = d.role
            delta["content"] = d.content
        elif d.content:
            delta["content"] = d.content
        if d.tool_calls:
            delta["tool_calls"] = tool_calls_json(d.tool_calls, indexed=True)
        choice: dict[str, Any] = {
            "index": d.index,
            "delta": delta,
            "logprobs": {"content": logprobs_json(d.logprobs)} if d.logprobs else None,
            "finish_reason": finish_reason(d.finish_reason),
        }
        if d.token_ids:
            choice["token_ids"] = list(d.token_ids)
        choices.append(choice)
    out: dict[str, Any] = {
        "id": msg.id,
        "object": "chat.completion.chunk",
        "created": msg.created,
        "model": msg.model,
        "system_fingerprint": None,
        "choices": choices,
    }
    if include_usage:
        out["usage"] = None
    if msg.sources:
        out["sources"] = sources_json(msg.sources)
    if msg.events:
        out["events"] = events_json(msg.events)
    if msg.session_id and any(d.role for d in msg.choices):
        out["session_id"] = msg.session_id
    return out


def usage_chunk_json(msg: chat_pb2.ChatResponse) -> dict[str, Any]:
    """The extra last chunk `stream_options.include_usage` asks for: no choices, only usage."""
    return {
        "id": msg.id,
        "object": "chat.completion.chunk",
        "created": msg.created,
        "model": msg.model,
        "system_fingerprint": None,
        "choices": [],
        "usage": usage_json(msg.usage),
    }


class CompletionAccumulator:
    """Folds the stream into one `chat.completion` for `stream: false`."""

    def __init__(self) -> None:
        self.first: chat_pb2.ChatResponse | None = None
        self.content: list[str] = []
        self.tool_calls: list[common_pb2.ToolCall] = []
        self.logprobs: list[common_pb2.PositionLogprobs] = []
        self.token_ids: list[int] = []
        self.events: list[common_pb2.Event] = []
        self.finish = 0
        self.usage = common_pb2.Usage()

    def add(self, msg: chat_pb2.ChatResponse) -> None:
        if self.first is None:
            self.first = msg
        self.events.extend(msg.events)
        for event in msg.events:
            if event.type == "reply_rewritten":  # the final text replaces what was streamed
                self.content = [event.data["reply"]]
        for d in msg.choices:
            self.content.append(d.content)
            self.tool_calls.extend(d.tool_calls)
            self.logprobs.extend(d.logprobs)
            self.token_ids.extend(d.token_ids)
            self.finish = d.finish_reason or self.finish
        if msg.HasField("usage"):
            self.usage.CopyFrom(msg.usage)

    def result(self, *, with_logprobs: bool, with_token_ids: bool) -> dict[str, Any]:
        first = self.first or chat_pb2.ChatResponse()
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.tool_calls:
            message["tool_calls"] = tool_calls_json(self.tool_calls, indexed=False)
            message["content"] = message["content"] or None
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": {"content": logprobs_json(self.logprobs)} if with_logprobs else None,
            "finish_reason": finish_reason(self.finish) or "stop",
        }
        if with_token_ids:
            choice["token_ids"] = self.token_ids
        out: dict[str, Any] = {
            "id": first.id,
            "object": "chat.completion",
            "created": first.created,
            "model": first.model,
            "system_fingerprint": None,
            "choices": [choice],
            "usage": usage_json(self.usage),
            "sources": sources_json(first.sources),
            "events": events_json(self.events),
        }
        if first.session_id:
            out["session_id"] = first.session_id
        return out


def error_json(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
