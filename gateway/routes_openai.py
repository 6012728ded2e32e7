"""The OpenAI-compatible routes: chat completions (SSE or whole), completions, models.

Handlers parse, call the pipeline and format; errors raised before the first byte become
OpenAI error responses in the error middleware, errors after it become a final `error` event.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web
from opentelemetry import propagate

from clawdbot.gateway import completion, sse
from clawdbot.gateway.appkeys import LIMITER, PIPELINE, UPSTREAMS
from clawdbot.gateway.errors import to_http
from clawdbot.gateway.logprobs import name_tokens
from clawdbot.gateway.middlewares import API_KEY, TENANT
from clawdbot.gateway.openai_format import (
    CompletionAccumulator,
    chunk_json,
    finish_reason,
    usage_chunk_json,
    usage_json,
)
from clawdbot.gateway.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_body,
    stops_of,
    to_chat_request,
)
from clawdbot.gateway.textstream import TextPiece
from clawdbot.shared.errors import InvalidArgument, NotFound
from clawdbot.v1 import chat_pb2

log = logging.getLogger("clawdbot.gateway.http")
routes = web.RouteTableDef()


async def read_json(request: web.Request) -> Any:
    raw = await request.read()  # aiohttp enforces client_max_size here (413)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidArgument(
            "We could not parse the JSON body of your request. The body must be valid JSON "
            "(Content-Type: application/json)."
        ) from None


async def _stream_error(response: web.StreamResponse, exc: BaseException) -> None:
    """An error after the stream started: one `error` event, then the stream ends."""
    _, body, _ = to_http(exc)
    log.warning("stream failed", extra={"error": repr(exc)}, exc_info=exc)
    await sse.send(response, body)
    await response.write_eof()


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = parse_body(ChatCompletionRequest, await read_json(request))
    session_id = request.headers.get("X-Session-Id") or body.session_id
    chat_request = to_chat_request(body, tenant=request[TENANT], session_id=session_id)
    # A caller's W3C `traceparent` makes the turn part of its trace.
    turn = request.app[PIPELINE].chat(chat_request, parent=propagate.extract(dict(request.headers)))
    usage_tokens = 0
    try:
        first = await anext(turn)  # errors before any byte is sent become a proper HTTP error
        headers = {"X-Session-Id": session_id} if session_id else {}
        if not body.stream:
            acc = CompletionAccumulator()
            acc.add(first)
            async for msg in turn:
                acc.add(msg)
            usage_tokens = acc.usage.prompt_tokens + acc.usage.completion_tokens
            result = acc.result(with_logprobs=body.logprobs, with_token_ids=body.return_token_ids)
            return web.json_response(result, headers=headers, dumps=_dumps)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        response = await sse.open_stream(request, headers)
        last: chat_pb2.ChatResponse = first
        try:
            await sse.send(response, chunk_json(first, include_usage=include_usage))
            async for msg in turn:
                last = msg
                await sse.send(response, chunk_json(msg, include_usage=include_usage))
        except (ConnectionError, OSError):
            raise
        except Exception as exc:
            await _stream_error(response, exc)
            return response
        usage_tokens = last.usage.prompt_tokens + last.usage.completion_tokens
        if include_usage:
            await sse.send(response, usage_chunk_json(last))
        await sse.done(response)
        return response
    finally:
        await turn.aclose()
        if usage_tokens:
            await request.app[LIMITER].charge_tokens(request[API_KEY], usage_tokens)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


async def _completion_logprobs(request: web.Request, pieces: list[TextPiece], offset: int) -> dict[str, Any]:
    """The legacy completions `logprobs` object, with each token's own text."""
    positions = [lp for piece in pieces for lp in piece.logprobs]
    named = await name_tokens(request.app[UPSTREAMS], positions)
    offsets: list[int] = []
    for p in named:
        offsets.append(offset)
        offset += len(p.chosen.token)
    return {
        "tokens": [p.chosen.token for p in named],
        "token_logprobs": [p.chosen.logprob for p in named],
        "top_logprobs": [{t.token: t.logprob for t in p.top} for p in named],
        "text_offset": offsets,
    }


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    body = parse_body(CompletionRequest, await read_json(request))
    up = request.app[UPSTREAMS]
    job = completion.CompletionJob(
        prompt=body.prompt,
        model=body.model,
        max_tokens=body.max_tokens or 16,
        stop=stops_of(body.stop),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=body.logprobs,
    )
    await completion.prepare(up, job)
    created = int(time.time())

    def envelope(text: str, finish: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        choice.update(extra or {})
        return {
            "id": job.id,
            "object": "text_completion",
            "created": created,
            "model": job.model,
            "system_fingerprint": None,
            "choices": [choice],
        }

    stream = completion.run(up, job)
    try:
        if not body.stream:
            pieces = [p async for p in stream]
            text = "".join(p.text for p in pieces)
            prefix = job.prompt_text if body.echo else ""
            extra: dict[str, Any] = {}
            if body.logprobs is not None:
                extra["logprobs"] = await _completion_logprobs(request, pieces, len(prefix))
            if body.return_token_ids:
                extra["token_ids"] = [i for p in pieces for i in p.token_ids]
                extra["prompt_token_ids"] = job.prompt_ids
            result = envelope(prefix + text, finish_reason(job.outcome.finish_reason) or "stop", extra)
            result["usage"] = usage_json(job.outcome.usage)
            return web.json_response(result, dumps=_dumps)
        response = await sse.open_stream(request)
        try:
            if body.echo:
                await sse.send(response, envelope(job.prompt_text, None))
            async for piece in stream:
                extra = {"token_ids": piece.token_ids} if body.return_token_ids else {}
                if piece.text or extra:
                    await sse.send(response, envelope(piece.text, None, extra))
            await sse.send(response, envelope("", finish_reason(job.outcome.finish_reason) or "stop"))
            if body.stream_options and body.stream_options.include_usage:
                final = envelope("", None)
                final["choices"] = []
                final["usage"] = usage_json(job.outcome.usage)
                await sse.send(response, final)
        except (ConnectionError, OSError):
            raise
        except Exception as exc:
            await _stream_error(response, exc)
            return response
        await sse.done(response)
        return response
    finally:
        await stream.aclose()


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    facts = await request.app[UPSTREAMS].model_facts()
    return web.json_response(
        {
            "object": "list",
            "data": [
                {
                    "id": facts.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "clawdbot",
                    "context_length": facts.context_length,
                }
            ],
        }
    )


@routes.get("/v1/models/{model}")
async def get_model(request: web.Request) -> web.Response:
    facts = await request.app[UPSTREAMS].model_facts()
    name = request.match_info["model"]
    if name != facts.name:
        raise NotFound(f"The model `{name}` does not exist", field="model")
    return web.json_response(
        {
            "id": facts.name,
            "object": "model",
            "created": 0,
            "owned_by": "clawdbot",
            "context_length": facts.context_length,
        }
    )
