"""Turn a `GenerateRequest` into a `Sequence`, or an `InvalidArgument` naming the offending field.

Everything is checked before the request reaches the engine, so bad input never disturbs the
requests already running.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from dataclasses import dataclass

from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.grounding import check_stop_ids, grounding_problem
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.shared.errors import FailedPrecondition, InvalidArgument, require
from clawdbot.v1 import inference_pb2

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Limits:
    """What the engine can hold, besides the model's context length."""

    block_size: int
    num_blocks: int
    full_attention: bool  # some layer keeps every block, so the pool bounds a sequence's length
    # Grounded decoding (Engine.grounding): "on"; "off" (the setting: requests' grounding is
    # ignored); "unavailable" (the engine has no digit tokens: grounded requests are refused).
    grounding: str = "unavailable"
    grounding_digits: frozenset[int] = frozenset()  # the tokens that write one digit (when "on")


def _finite(value: float, field: str) -> float:
    require(math.isfinite(value), field, f"must be a finite number, got {value}")
    return value


def sampling_params(
    sampling: inference_pb2.SamplingParams, prompt_len: int, config: ModelConfig, limits: Limits
) -> SamplingParams:
    temperature = (
        _finite(sampling.temperature, "sampling.temperature") if sampling.HasField("temperature") else 1.0
    )
    require(temperature >= 0, "sampling.temperature", f"must be >= 0, got {temperature}")
    top_p = _finite(sampling.top_p, "sampling.top_p") if sampling.HasField("top_p") else 1.0
    require(0 < top_p <= 1, "sampling.top_p", f"must lie in (0, 1], got {top_p}")
    min_p = _finite(sampling.min_p, "sampling.min_p")
    require(0 <= min_p <= 1, "sampling.min_p", f"must lie in [0, 1], got {min_p}")
    repetition = (
        _finite(sampling.repetition_penalty, "sampling.repetition_penalty")
        if sampling.HasField("repetition_penalty")
        else 1.0
    )
    require(repetition > 0, "sampling.repetition_penalty", f"must be > 0, got {repetition}")
    for name in ("presence_penalty", "frequency_penalty"):
        value = _finite(getattr(sampling, name), f"sampling.{name}")
        require(-2 <= value <= 2, f"sampling.{name}", f"must lie in [-2, 2], got {value}")
    room = config.context_length - prompt_len
    max_tokens = sampling.max_tokens
    require(
        max_tokens >= 0,
        "sampling.max_tokens",
        f"must be > 0 (or 0 for 'up to the context'), got {max_tokens}",
    )
    capacity = limits.num_blocks * limits.block_size if limits.full_attention else config.context_length
    if max_tokens == 0:
        max_tokens = min(room, capacity - prompt_len)
        require(
            max_tokens > 0, "prompt_token_ids", f"the prompt fills the KV cache capacity of {capacity} tokens"
        )
    require(
        max_tokens <= room,
        "sampling.max_tokens",
        f"prompt ({prompt_len}) + max_tokens ({max_tokens}) exceeds the context length {config.context_length}",
    )
    if limits.full_attention:
        require(
            prompt_len + max_tokens <= capacity,
            "sampling.max_tokens",
            f"prompt + max_tokens ({prompt_len + max_tokens}) exceeds the KV cache capacity of {capacity} tokens",
        )
    for i, token in enumerate(sampling.stop_token_ids):
        require(
            token < config.vocab_size,
            f"sampling.stop_token_ids[{i}]",
            f"id {token} is outside the vocabulary",
        )
    require(
        sampling.top_logprobs <= MAX_TOP_LOGPROBS,
        "sampling.top_logprobs",
        f"at most {MAX_TOP_LOGPROBS}, got {sampling.top_logprobs}",
    )
    require(
        sampling.min_tokens <= max_tokens,
        "sampling.min_tokens",
        f"min_tokens ({sampling.min_tokens}) exceeds max_tokens ({max_tokens})",
    )
    seed = sampling.seed if sampling.HasField("seed") else secrets.randbits(63)
    if seed >= 1 << 63:  # uint64 -> int64 two's complement: the sampler hashes the bits
        seed -= 1 << 64
    return SamplingParams(
        temperature=temperature,
        top_k=int(sampling.top_k),
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        seed=seed,
        max_tokens=max_tokens,
        stop_token_ids=tuple(sampling.stop_token_ids),
        ignore_eos=sampling.ignore_eos,
        logprobs=sampling.logprobs or sampling.top_logprobs > 0,
        top_logprobs=int(sampling.top_logprobs),
        min_tokens=int(sampling.min_tokens),
    )


def grounding_text(grounding: inference_pb2.Grounding, params: SamplingParams, limits: Limits) -> str | None:
    """The text a request is grounded on, or None (not asked for, or the setting is off)."""
    if not grounding.enabled:
        return None
    problem = grounding_problem(grounding.text)
    if problem is not None:
        raise InvalidArgument(problem, field="grounding.text")
    if limits.grounding == "unavailable":
        raise FailedPrecondition(
            "this service cannot ground: its model folder has no tokenizer.json that writes every "
            "digit as one token (ModelInfo.grounding says whether it can)",
            field="grounding",
        )
    if limits.grounding == "off":
        return None
    check_stop_ids(params.stop_token_ids, limits.grounding_digits)
    return grounding.text


def build_sequence(
    request: inference_pb2.GenerateRequest,
    config: ModelConfig,
    limits: Limits,
    time_remaining: float | None = None,
) -> Sequence:
    """The engine's `Sequence` for a request; `time_remaining` is the gRPC deadline, if any."""
    prompt = list(request.prompt_token_ids)
    require(bool(prompt), "prompt_token_ids", "must not be empty")
    require(
        len(prompt) < config.context_length,
        "prompt_token_ids",
        f"{len(prompt)} tokens leave no room in the context length {config.context_length}",
    )
    bad = next((i for i, token in enumerate(prompt) if token >= config.vocab_size), None)
    if bad is not None:
        raise InvalidArgument(
            f"id {prompt[bad]} is outside the vocabulary (size {config.vocab_size})",
            field=f"prompt_token_ids[{bad}]",
        )
    params = sampling_params(request.sampling, len(prompt), config, limits)
    deadline = None
    now = time.monotonic()
    if request.HasField("deadline"):
        deadline = now + (request.deadline.ToNanoseconds() / 1e9 - time.time())
    if time_remaining is not None:
        deadline = min(deadline, now + time_remaining) if deadline is not None else now + time_remaining
    return Sequence(
        request_id=request.request_id or uuid.uuid4().hex,
        token_ids=prompt,
        params=params,
        priority=request.priority,
        deadline=deadline,
        grounding=grounding_text(request.grounding, params, limits),
    )
