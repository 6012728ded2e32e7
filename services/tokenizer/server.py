"""gRPC surface of the tokenizer service: validation, conversion, nothing else."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from clawdbot.services.tokenizer.messages import to_template_messages, to_template_tools
from clawdbot.services.tokenizer.settings import TokenizerSettings
from clawdbot.services.tokenizer.tokenizer import TextTokenizer
from clawdbot.shared.errors import InvalidArgument, ResourceExhausted, Unavailable
from clawdbot.shared.grpc_server import ServiceHost
from clawdbot.v1 import tokenizer_pb2, tokenizer_pb2_grpc

SERVICE_NAME = tokenizer_pb2.DESCRIPTOR.services_by_name["Tokenizer"].full_name
# Work above this many characters runs in a thread so the event loop keeps serving streams.
_OFFLOAD_CHARS = 20_000


def _load_tokenizer(model: Path) -> TextTokenizer:
    """The folder's tokenizer; a base + adapter recipe is built into its serving folder first."""
    if (model / "base.json").is_file():
        from clawdbot.services.inference.model.adapter import served_folder

        model = served_folder(model)
    return TextTokenizer(model)


class TokenizerServicer(tokenizer_pb2_grpc.TokenizerServicer):
    def __init__(self, settings: TokenizerSettings) -> None:
        self.settings = settings
        self._tok: TextTokenizer | None = None

    async def load(self) -> None:
        self._tok = await asyncio.to_thread(_load_tokenizer, self.settings.model)

    @property
    def tok(self) -> TextTokenizer:
        if self._tok is None:
            raise Unavailable("the tokenizer is still loading")
        return self._tok

    def _check_batch(self, count: int, chars: int, field: str) -> None:
        if count > self.settings.max_batch:
            raise ResourceExhausted(
                f"{count} items in one call; the limit is {self.settings.max_batch}", field=field
            )
        if chars > self.settings.max_chars:
            raise ResourceExhausted(
                f"{chars} characters in one call; the limit is {self.settings.max_chars}", field=field
            )

    async def Encode(
        self, request: tokenizer_pb2.EncodeRequest, context: Any
    ) -> tokenizer_pb2.EncodeResponse:
        texts = list(request.texts)
        chars = sum(map(len, texts))
        self._check_batch(len(texts), chars, "texts")
        tok = self.tok
        allowed = tok.check_allowed(request.allowed_special)

        def work() -> tokenizer_pb2.EncodeResponse:
            response = tokenizer_pb2.EncodeResponse()
            if request.return_offsets:
                for text in texts:
                    ids, offsets = tok.encode_with_offsets(text, allowed)
                    if request.add_special_tokens:
                        ids = tok.prefix_ids + ids + tok.suffix_ids
                        offsets = (
                            [(0, 0)] * len(tok.prefix_ids)
                            + offsets
                            + [(len(text), len(text))] * len(tok.suffix_ids)
                        )
                    response.encodings.add(ids=ids, offsets=[x for pair in offsets for x in pair])
            else:
                for ids in tok.encode(
                    texts, add_special_tokens=request.add_special_tokens, allowed_special=allowed
                ):
                    response.encodings.add(ids=ids)
            return response

        return await asyncio.to_thread(work) if chars > _OFFLOAD_CHARS else work()

    async def Decode(
        self, request: tokenizer_pb2.DecodeRequest, context: Any
    ) -> tokenizer_pb2.DecodeResponse:
        sequences = [list(s.ids) for s in request.sequences]
        self._check_batch(len(sequences), 0, "sequences")
        for i, ids in enumerate(sequences):
            self.tok.check_ids(ids, f"sequences[{i}].ids")
        texts = self.tok.decode(sequences, skip_special_tokens=request.skip_special_tokens)
        return tokenizer_pb2.DecodeResponse(texts=texts)

    async def ApplyChatTemplate(
        self, request: tokenizer_pb2.ApplyChatTemplateRequest, context: Any
    ) -> tokenizer_pb2.ApplyChatTemplateResponse:
        if not request.messages:
            raise InvalidArgument("at least one message is required", field="messages")
        kwargs = _template_kwargs(request.template_kwargs_json)
        messages = to_template_messages(request.messages)
        tools = to_template_tools(request.tools)
        ids, text = await asyncio.to_thread(
            self.tok.render_chat,
            messages,
            tools,
            add_generation_prompt=request.add_generation_prompt,
            template_kwargs=kwargs,
        )
        response = tokenizer_pb2.ApplyChatTemplateResponse(num_tokens=len(ids))
        if request.output != tokenizer_pb2.TEMPLATE_OUTPUT_TEXT:
            response.ids.extend(ids)
        if request.output != tokenizer_pb2.TEMPLATE_OUTPUT_IDS:
            response.text = text
        return response

    async def DetokenizeStream(
        self, request_iterator: AsyncIterator[tokenizer_pb2.DetokenizeChunk], context: Any
    ) -> AsyncIterator[tokenizer_pb2.DetokenizeDelta]:
        detok = None
        async for chunk in request_iterator:
            if detok is None:
                self.tok.check_ids(chunk.prefix_ids, "prefix_ids")
                detok = self.tok.detokenizer(
                    skip_special_tokens=chunk.skip_special_tokens, prefix_ids=chunk.prefix_ids
                )
            self.tok.check_ids(chunk.ids, "ids")
            text = detok.add(chunk.ids)
            if text:
                yield tokenizer_pb2.DetokenizeDelta(text=text, ids_consumed=detok.ids_consumed)
        if detok is not None:
            tail = detok.flush()
            if tail:
                yield tokenizer_pb2.DetokenizeDelta(text=tail, ids_consumed=detok.ids_consumed)

    async def CountTokens(
        self, request: tokenizer_pb2.CountTokensRequest, context: Any
    ) -> tokenizer_pb2.CountTokensResponse:
        texts = list(request.texts)
        self._check_batch(len(texts) + len(request.messages), sum(map(len, texts)), "texts")
        response = tokenizer_pb2.CountTokensResponse(
            counts=[len(ids) for ids in self.tok.encode(texts)] if texts else []
        )
        if request.messages:
            messages = to_template_messages(request.messages)
            tools = to_template_tools(request.tools)
            per_message, total = await asyncio.to_thread(_count_messages, self.tok, messages, tools)
            response.messages_tokens = total
            response.per_message.extend(per_message)
        return response

    async def Info(
        self, request: tokenizer_pb2.TokenizerInfoRequest, context: Any
    ) -> tokenizer_pb2.TokenizerInfo:
        tok = self.tok
        info = tokenizer_pb2.TokenizerInfo(
            name=tok.model_dir.name,
            vocab_size=tok.vocab_size,
            eos_token_ids=tok.eos_token_ids,
            has_chat_template=tok.has_chat_template,
            model_max_length=tok.model_max_length,
        )
        if tok.bos_token_id is not None:
            info.bos_token_id = tok.bos_token_id
        for special in tok.special_tokens():
            info.special_tokens.add(content=special.content, id=special.id, role=special.role)
        return info


def _template_kwargs(raw: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"not valid JSON: {exc.msg}", field="template_kwargs_json") from exc
    if not isinstance(value, dict):
        raise InvalidArgument("must be a JSON object", field="template_kwargs_json")
    return value


def _count_messages(
    tok: TextTokenizer, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> tuple[list[int], int]:
    """Each message's share of the templated prompt (prefix differences) and the total with a generation prompt."""
    shares: list[int] = []
    previous = len(tok.render_chat([], tools, add_generation_prompt=False)[0]) if tools else 0
    for end in range(1, len(messages) + 1):
        length = len(tok.render_chat(messages[:end], tools, add_generation_prompt=False)[0])
        shares.append(max(0, length - previous))
        previous = length
    total = len(tok.render_chat(messages, tools, add_generation_prompt=True)[0])
    return shares, total


def build_host(settings: TokenizerSettings) -> tuple[ServiceHost, TokenizerServicer]:
    servicer = TokenizerServicer(settings)
    host = ServiceHost("tokenizer", settings)
    host.add_service(
        SERVICE_NAME, lambda server: tokenizer_pb2_grpc.add_TokenizerServicer_to_server(servicer, server)
    )
    return host, servicer


async def serve(settings: TokenizerSettings) -> None:
    host, servicer = build_host(settings)
    await host.run(startup=servicer.load)


__all__ = ["SERVICE_NAME", "TokenizerServicer", "build_host", "grpc", "serve"]
