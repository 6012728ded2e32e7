"""A plain (legacy) completion: a prompt given as text or token ids, no chat template, no memory,
no plugins. It shares the stream mechanics of the chat turn (Generate -> DetokenizeStream ->
stop strings), so cancellation and stop strings behave the same.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from clawdbot.gateway.textstream import StreamOutcome, TextPiece, detokenized, until_stop
from clawdbot.gateway.upstreams import Upstreams
from clawdbot.shared.errors import InvalidArgument, NotFound
from clawdbot.v1 import inference_pb2, tokenizer_pb2


@dataclass
class CompletionJob:
    prompt: str | list[int]
    model: str
    max_tokens: int
    stop: Sequence[str] = ()
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    prompt_ids: list[int] = field(default_factory=list)
    prompt_text: str = ""
    outcome: StreamOutcome = field(default_factory=StreamOutcome)


async def prepare(up: Upstreams, job: CompletionJob) -> None:
    """Resolve the prompt to ids and text, and check the model name and the context budget."""
    facts = await up.model_facts()
    if job.model != facts.name:
        raise NotFound(
            f"The model `{job.model}` does not exist; this server serves `{facts.name}`", field="model"
        )
    if isinstance(job.prompt, str):
        encoded = await up.tokenizer.Encode(
            tokenizer_pb2.EncodeRequest(texts=[job.prompt], add_special_tokens=True)
        )
        job.prompt_ids = list(encoded.encodings[0].ids)
        job.prompt_text = job.prompt
    else:
        if any(i >= facts.vocab_size for i in job.prompt):
            raise InvalidArgument(
                f"token ids must be below the vocabulary size {facts.vocab_size}", field="prompt"
            )
        job.prompt_ids = list(job.prompt)
        decoded = await up.tokenizer.Decode(
            tokenizer_pb2.DecodeRequest(sequences=[tokenizer_pb2.TokenIds(ids=job.prompt_ids)])
        )
        job.prompt_text = decoded.texts[0] if decoded.texts else ""
    if not job.prompt_ids:
        raise InvalidArgument("the prompt is empty", field="prompt")
    if len(job.prompt_ids) + job.max_tokens > facts.context_length:
        raise InvalidArgument(
            f"This model's context length is {facts.context_length} tokens; the prompt has "
            f"{len(job.prompt_ids)} and max_tokens asks for {job.max_tokens}",
            field="max_tokens",
        )


async def run(up: Upstreams, job: CompletionJob) -> AsyncGenerator[TextPiece, None]:
    facts = await up.model_facts()
    sampling = inference_pb2.SamplingParams(
        max_tokens=job.max_tokens,
        presence_penalty=job.presence_penalty,
        frequency_penalty=job.frequency_penalty,
        logprobs=job.logprobs is not None,
        top_logprobs=job.logprobs or 0,
        stop_token_ids=facts.eos_token_ids,
    )
    if job.temperature is not None:
        sampling.temperature = job.temperature
    if job.top_p is not None:
        sampling.top_p = job.top_p
    if job.seed is not None:
        sampling.seed = job.seed
    request = inference_pb2.GenerateRequest(
        request_id=job.id, prompt_token_ids=job.prompt_ids, sampling=sampling
    )
    stream = until_stop(detokenized(up, request, job.outcome, job.prompt_ids[-4:]), job.stop, job.outcome)
    try:
        async for piece in stream:
            yield piece
    finally:
        await stream.aclose()
