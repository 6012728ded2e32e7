"""The inference service over real gRPC: parity with transformers, bad input, cancellation, limits.

By default the engine runs in its own process (the product's default); tests that look inside the
engine (its block tables, its streams) run it in the service's process (`engine_process=False`),
the rest read what an operator reads: the core's metrics through the service.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from clawdbot.services.inference.dummy import write_digit_tokenizer
from clawdbot.services.inference.engine import Engine
from clawdbot.services.inference.engine_client import EngineClient
from clawdbot.services.inference.sequence import SamplingParams
from clawdbot.services.inference.service import InferenceService
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.services.inference.testing import eventually, reference_greedy, tiny_model, torch_threads
from clawdbot.shared.channels import create_channel
from clawdbot.shared.interceptors import STATUS_DETAILS_KEY
from clawdbot.shared.processes import health_status
from clawdbot.v1 import common_pb2, inference_pb2, inference_pb2_grpc


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


async def running_service(folder: Path, port: int, **overrides: Any) -> InferenceService:
    options: dict[str, Any] = {"block_size": 4, "num_kv_blocks": 256, "max_num_batched_tokens": 64}
    options.update(overrides)
    settings = InferenceSettings(model=folder, port=port, log_level="WARNING", grace_seconds=1.0, **options)
    service = InferenceService(settings)
    await service.host.start()
    # The port is open but the model is not loaded: health says so.
    assert await health_status(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.NOT_SERVING
    await service.startup()
    await service.host.set_serving(True)
    return service


async def stopped(service: InferenceService) -> None:
    await service.host.stop()
    await service.shutdown()


@pytest.fixture(params=[True, False], ids=["engine-process", "in-process"])
async def mistral(
    request: pytest.FixtureRequest, tmp_path: Path, port: int
) -> AsyncIterator[tuple[InferenceService, Any, inference_pb2_grpc.InferenceStub]]:
    hf = tiny_model("mistral", tmp_path, seed=21)
    service = await running_service(tmp_path, port, engine_process=request.param)
    async with create_channel(f"127.0.0.1:{port}") as channel:
        yield service, hf, inference_pb2_grpc.InferenceStub(channel)
    await stopped(service)


@pytest.fixture
async def local_mistral(
    tmp_path: Path, port: int
) -> AsyncIterator[tuple[InferenceService, Any, inference_pb2_grpc.InferenceStub]]:
    """The engine in the service's process, for tests that inspect its internals."""
    hf = tiny_model("mistral", tmp_path, seed=21)
    service = await running_service(tmp_path, port, engine_process=False)
    async with create_channel(f"127.0.0.1:{port}") as channel:
        yield service, hf, inference_pb2_grpc.InferenceStub(channel)
    await stopped(service)


def local_engine(service: InferenceService) -> Engine:
    assert isinstance(service.engine, Engine)
    return service.engine


async def engine_gauge(service: InferenceService, name: str) -> float:
    """A gauge of the engine as /metrics shows it (asked of the core when it runs in its own process)."""
    if isinstance(service.engine, EngineClient):
        text = await service.engine.metrics_text()
    else:
        text = generate_latest(REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return float(family.samples[0].value)
    raise AssertionError(f"{name} not in the metrics")


async def gauge_reaches(service: InferenceService, name: str, value: float, timeout: float = 10.0) -> bool:
    """Poll a gauge, bounded: the engine's state is in another process (or thread), with no event to await."""
    deadline = time.monotonic() + timeout
    while True:
        if await engine_gauge(service, name) == value:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


def request(prompt: list[int], request_id: str = "", **sampling: Any) -> inference_pb2.GenerateRequest:
    return inference_pb2.GenerateRequest(
        request_id=request_id, prompt_token_ids=prompt, sampling=inference_pb2.SamplingParams(**sampling)
    )


async def generate(
    stub: inference_pb2_grpc.InferenceStub, req: inference_pb2.GenerateRequest
) -> tuple[list[int], Any]:
    tokens: list[int] = []
    last = None
    async for message in stub.Generate(req, timeout=120):
        tokens.extend(message.token_ids)
        last = message
    return tokens, last


def prompt_of(length: int, seed: int) -> list[int]:
    return torch.randint(3, 512, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
async def test_64_greedy_tokens_and_logprobs_match_transformers_through_grpc(
    family: str, tmp_path: Path, port: int
) -> None:
    hf = tiny_model(family, tmp_path, seed=20)
    prompt = prompt_of(40, seed=20)  # longer than the window (16) of mistral / qwen2
    expected = reference_greedy(hf, prompt, 64)
    with torch.no_grad():  # teacher-forced fp32 log-probabilities of every generated position
        reference = hf(torch.tensor([prompt + expected])).logits[0, 39:-1].log_softmax(-1)
    service = await running_service(tmp_path, port)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            info = await stub.ModelInfo(inference_pb2.ModelInfoRequest())
            assert info.architecture == family and info.vocab_size == 512 and info.quantization == "none"
            assert list(info.sliding_windows) == list(service.engine.config.layer_windows)  # type: ignore[union-attr]
            messages = [
                m
                async for m in stub.Generate(
                    request(
                        prompt, temperature=0.0, max_tokens=64, ignore_eos=True, logprobs=True, top_logprobs=5
                    ),
                    timeout=120,
                )
            ]
    finally:
        await stopped(service)
    tokens = [t for m in messages for t in m.token_ids]
    positions = [p for m in messages for p in m.logprobs]
    assert tokens == expected
    ours = torch.tensor([[p.chosen.logprob] + [a.logprob for a in p.top] for p in positions])
    theirs = torch.stack(
        [torch.cat([reference[i, t : t + 1], reference[i].topk(5).values]) for i, t in enumerate(expected)]
    )
    assert (ours - theirs).abs().max().item() <= 1e-4  # prefill (first row) and every decode step
    last = messages[-1]
    assert last.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert last.usage.prompt_tokens == 40 and last.usage.completion_tokens == 64


def violation(err: grpc.aio.AioRpcError) -> str:
    """The field named in the google.rpc.BadRequest details of an error."""
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return bad.field_violations[0].field
    return ""


BAD_INPUTS = [
    ({"prompt": []}, "prompt_token_ids"),
    ({"prompt": [5] * 512}, "prompt_token_ids"),  # the context is 512
    ({"max_tokens": -1}, "sampling.max_tokens"),
    ({"max_tokens": 600}, "sampling.max_tokens"),
    ({"prompt": [5, 9, 512]}, "prompt_token_ids[2]"),
    ({"temperature": -0.5}, "sampling.temperature"),
    ({"top_p": 0.0}, "sampling.top_p"),
    ({"top_p": 1.5}, "sampling.top_p"),
    ({"top_logprobs": 21}, "sampling.top_logprobs"),
    ({"stop_token_ids": [9999]}, "sampling.stop_token_ids[0]"),
]


async def test_bad_input_is_invalid_argument_naming_the_field_while_others_run(mistral: Any) -> None:
    _, hf, stub = mistral
    prompt = prompt_of(20, seed=22)
    expected = reference_greedy(hf, prompt, 48)
    long_call = asyncio.create_task(
        generate(stub, request(prompt, temperature=0.0, max_tokens=48, ignore_eos=True))
    )
    for case, field in BAD_INPUTS:
        case = dict(case)
        bad_prompt = case.pop("prompt", [5, 6, 7])
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await generate(stub, request(bad_prompt, **case))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert violation(err.value) == field, case
        assert field in (err.value.details() or "")
    tokens, last = await long_call
    assert tokens == expected and last.finish_reason == common_pb2.FINISH_REASON_LENGTH


async def test_closing_a_stream_frees_its_blocks_and_others_are_unaffected(local_mistral: Any) -> None:
    service, hf, stub = local_mistral
    engine = local_engine(service)
    prompt_a, prompt_b = prompt_of(30, seed=23), prompt_of(12, seed=24)
    expected_b = reference_greedy(hf, prompt_b, 40)
    call_b = asyncio.create_task(
        generate(stub, request(prompt_b, "b", temperature=0.0, max_tokens=40, ignore_eos=True))
    )
    call_a = stub.Generate(
        request(prompt_a, "a", temperature=0.0, max_tokens=400, ignore_eos=True), timeout=60
    )
    received = 0
    async for message in call_a:
        received += len(message.token_ids)
        if received >= 3:
            break
    assert "a" in engine.blocks.tables
    call_a.cancel()
    assert await eventually(lambda: "a" not in engine.blocks.tables, timeout=10)
    tokens_b, _ = await call_b
    assert tokens_b == expected_b
    engine.blocks.check()


async def test_a_lagging_consumer_gets_several_tokens_in_one_message(local_mistral: Any) -> None:
    service, _, _ = local_mistral

    class Context:  # the servicer only asks the gRPC context for the remaining time
        def time_remaining(self) -> float | None:
            return None

    stream = service.servicer.Generate(
        request(prompt_of(10, seed=25), "lag", temperature=0.0, max_tokens=20, ignore_eos=True), Context()
    )
    first = await stream.__anext__()
    # The consumer does not read while the engine finishes the request and queues its last event;
    # one turn of the event loop then runs the puts the engine thread scheduled (FIFO).
    assert await eventually(lambda: "lag" not in local_engine(service).streams, timeout=30)
    await asyncio.sleep(0)
    rest = [message async for message in stream]
    assert len(first.token_ids) + sum(len(m.token_ids) for m in rest) == 20
    assert len(rest) == 1 and len(rest[0].token_ids) > 1
    assert rest[0].finish_reason == common_pb2.FINISH_REASON_LENGTH


async def test_logprobs_stop_ids_and_seeded_sampling(mistral: Any) -> None:
    _, hf, stub = mistral
    prompt = prompt_of(16, seed=26)
    greedy = reference_greedy(hf, prompt, 8)
    tokens, last = await generate(
        stub,
        request(
            prompt, temperature=0.0, max_tokens=8, stop_token_ids=[greedy[3]], logprobs=True, top_logprobs=3
        ),
    )
    cut = greedy.index(greedy[3])
    assert tokens == greedy[:cut]  # the stop id itself is reported, not streamed
    assert last.finish_reason == common_pb2.FINISH_REASON_STOP and last.stop_token_id == greedy[3]
    assert last.usage.completion_tokens == cut + 1
    seeded = {"temperature": 1.0, "top_p": 0.95, "seed": 7, "max_tokens": 16, "ignore_eos": True}
    first, _ = await generate(stub, request(prompt, **seeded))
    second, _ = await generate(stub, request(prompt, **seeded))
    assert first == second
    messages = [
        m
        async for m in stub.Generate(
            request(prompt, temperature=0.0, max_tokens=4, logprobs=True, top_logprobs=2)
        )
    ]
    positions = [p for m in messages for p in m.logprobs]
    assert len(positions) == 4 and all(
        len(p.top) == 2 and p.top[0].token_id == p.chosen.token_id for p in positions
    )


async def test_a_request_past_its_deadline_ends_with_abort_and_frees_its_blocks(mistral: Any) -> None:
    service, _, stub = mistral
    req = request([5, 6, 7], "late", temperature=0.0, max_tokens=500, ignore_eos=True)
    req.deadline.FromNanoseconds(time.time_ns() + 50_000_000)  # 50 ms: far less than 500 tokens take
    tokens, last = await generate(stub, req)
    assert last.finish_reason == common_pb2.FINISH_REASON_ABORT
    assert len(tokens) < 500 and last.usage.completion_tokens == len(tokens)
    # The finish event goes out in the step that ends the request; the gauge follows at the next
    # schedule, a moment later (a single read raced it once in a clean-clone run).
    assert await gauge_reaches(service, "clawdbot_inference_requests_running", 0)
    if isinstance(service.engine, Engine):
        assert "late" not in service.engine.blocks.tables


@pytest.mark.parametrize("engine_process", [True, False], ids=["engine-process", "in-process"])
async def test_full_waiting_queue_is_resource_exhausted(
    engine_process: bool, tmp_path: Path, port: int
) -> None:
    tiny_model("mistral", tmp_path, seed=27)
    service = await running_service(
        tmp_path, port, max_num_seqs=1, max_waiting=1, engine_process=engine_process
    )
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            long = {"temperature": 0.0, "max_tokens": 400, "ignore_eos": True}
            call_a = stub.Generate(request([5, 6, 7], "a", **long), timeout=60)
            await call_a.read()
            call_b = stub.Generate(request([5, 6, 8], "b", **long), timeout=60)
            assert await gauge_reaches(service, "clawdbot_inference_requests_waiting", 1)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await generate(stub, request([5, 6, 9], "c", **long))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "waiting queue is full" in (err.value.details() or "")
            call_a.cancel()
            call_b.cancel()
            # The refused request left the two running ones alone; the cancels end them in the engine.
            assert await gauge_reaches(service, "clawdbot_inference_requests_running", 0)
    finally:
        await stopped(service)


async def test_pacing_groups_the_tokens_of_many_open_streams_but_never_the_first(
    tmp_path: Path, port: int
) -> None:
    """--stream-pacing-us: the least time between two messages of a stream grows with the streams
    open, so eight streams at 50 ms each wait 400 ms between messages; each first token still goes
    out alone, and the tokens are those of an unbatched stream."""
    tiny_model("mistral", tmp_path, seed=21)
    service = await running_service(tmp_path, port, stream_pacing_us=50_000.0, engine_process=False)
    prompts = [prompt_of(10, seed=40 + i) for i in range(8)]
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)

            async def messages_of(i: int) -> list[inference_pb2.GenerateResponse]:
                req = request(prompts[i], f"paced{i}", temperature=0.0, max_tokens=40, ignore_eos=True)
                return [m async for m in stub.Generate(req, timeout=120)]

            streams = await asyncio.gather(*(messages_of(i) for i in range(8)))
        assert service.servicer.open_streams == 0
        reference = local_engine(service)
        for i, messages in enumerate(streams):
            assert len(messages[0].token_ids) == 1
            # 40 tokens of eight streams take well under a second on the CPU: a handful of messages
            # each at 400 ms apart (10 allow 3.6 s on a loaded machine; 40 without pacing).
            assert len(messages) <= 10, [len(m.token_ids) for m in messages]
            solo = await reference.generate(
                prompts[i], SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True), f"ref{i}"
            )
            assert [t for m in messages for t in m.token_ids] == solo
    finally:
        await stopped(service)


async def test_a_stream_interval_groups_tokens_but_not_the_first(tmp_path: Path, port: int) -> None:
    """--stream-interval-ms: the first token goes out alone and at once; later tokens sampled within
    the interval share a message; the tokens are those of an unbatched stream."""
    tiny_model("mistral", tmp_path, seed=21)
    service = await running_service(tmp_path, port, stream_interval_ms=200.0, engine_process=False)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            req = request(prompt_of(10, seed=26), "grouped", temperature=0.0, max_tokens=40, ignore_eos=True)
            messages = [m async for m in stub.Generate(req, timeout=120)]
        tokens = [t for m in messages for t in m.token_ids]
        assert len(tokens) == 40 and len(messages[0].token_ids) == 1
        # 40 decode steps of a tiny model on the CPU take well under a second: a handful of messages
        # (one per token without the interval, when the client keeps up).
        assert len(messages) <= 8
        assert messages[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH
        reference = await local_engine(service).generate(
            prompt_of(10, seed=26), SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True), "ref"
        )
        assert tokens == reference
    finally:
        await stopped(service)


# -- grounded decoding ---------------------------------------------------------------------------
GROUNDING_TEXT = "订单 20261126 已发货，运单号 SF1420261123887，金额 199.00"


def liked_digits(hf: Any, prompt: list[int]) -> list[int]:
    """Ten tokens the model writes for `prompt` when free: made the digit tokens of the folder's
    tokenizer, so that the free reply is full of invented numbers and the grounding has work."""
    liked = list(dict.fromkeys(reference_greedy(hf, prompt, 64)))
    extra = [t for t in range(3, 512) if t not in liked]
    return (liked + extra)[:10]


def runs_of(tokens: list[int], digits: list[int]) -> list[str]:
    """The maximal digit runs of a reply, reading `digits[d]` as the digit d."""
    value = {token: str(d) for d, token in enumerate(digits)}
    return re.findall(r"[0-9]+", "".join(value.get(t, " ") for t in tokens))


def grounded(
    prompt: list[int], text: str, enabled: bool = True, **sampling: Any
) -> inference_pb2.GenerateRequest:
    req = request(prompt, **sampling)
    req.grounding.CopyFrom(inference_pb2.Grounding(enabled=enabled, text=text))
    return req


@pytest.mark.parametrize("engine_process", [True, False], ids=["engine-process", "in-process"])
async def test_a_grounded_reply_copies_only_numbers_of_its_grounding_through_grpc(
    tmp_path: Path, port: int, engine_process: bool
) -> None:
    hf = tiny_model("mistral", tmp_path, seed=21)
    prompt = prompt_of(20, seed=40)
    digits = liked_digits(hf, prompt)
    write_digit_tokenizer(tmp_path, digits)
    service = await running_service(tmp_path, port, engine_process=engine_process)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            assert (await stub.ModelInfo(inference_pb2.ModelInfoRequest(), timeout=10)).grounding
            sampling = {"temperature": 0.0, "max_tokens": 64, "ignore_eos": True}
            free, _ = await generate(stub, request(prompt, **sampling))
            assert free == reference_greedy(hf, prompt, 64)
            off, _ = await generate(stub, grounded(prompt, GROUNDING_TEXT, enabled=False, **sampling))
            assert off == free  # disabled: the raw completion
            allowed = set(re.findall(r"[0-9]+", GROUNDING_TEXT))
            assert not set(runs_of(free, digits)) <= allowed  # the free reply invents numbers
            tokens, last = await generate(stub, grounded(prompt, GROUNDING_TEXT, **sampling))
            assert last.finish_reason == common_pb2.FINISH_REASON_LENGTH and len(tokens) == 64
            runs = runs_of(tokens, digits)
            cut = runs[-1:] if tokens[-1] in digits else []  # a run the length limit cut short
            assert runs and set(runs[: len(runs) - len(cut)]) <= allowed, runs
            assert all(any(run.startswith(c) for run in allowed) for c in cut)
            seeded = {"temperature": 0.9, "seed": 7, "max_tokens": 64, "ignore_eos": True}
            sampled, _ = await generate(stub, grounded(prompt, "no numbers here", **seeded))
            assert len(sampled) == 64 and not any(t in digits for t in sampled)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await generate(stub, grounded(prompt, "1" * 70_000, **sampling))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert violation(err.value) == "grounding.text"
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await generate(stub, grounded(prompt, "1", stop_token_ids=[digits[3]], max_tokens=4))
            assert violation(err.value) == "sampling.stop_token_ids[0]"
    finally:
        await stopped(service)


async def test_grounding_is_refused_without_a_tokenizer_and_ignored_when_switched_off(
    tmp_path: Path, port: int
) -> None:
    """A model folder without tokenizer.json cannot ground: FAILED_PRECONDITION naming the field
    (ModelInfo says so first). With the setting off the grounding is ignored."""
    hf = tiny_model("mistral", tmp_path, seed=21)
    prompt = prompt_of(12, seed=41)
    sampling = {"temperature": 0.0, "max_tokens": 16, "ignore_eos": True}
    service = await running_service(tmp_path, port, engine_process=False)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            assert not (await stub.ModelInfo(inference_pb2.ModelInfoRequest(), timeout=10)).grounding
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await generate(stub, grounded(prompt, GROUNDING_TEXT, **sampling))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert violation(err.value) == "grounding"
    finally:
        await stopped(service)
    write_digit_tokenizer(tmp_path, liked_digits(hf, prompt))
    service = await running_service(tmp_path, port, engine_process=False, grounding=False)
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            assert not (await stub.ModelInfo(inference_pb2.ModelInfoRequest(), timeout=10)).grounding
            tokens, _ = await generate(stub, grounded(prompt, GROUNDING_TEXT, **sampling))
            assert tokens == reference_greedy(hf, prompt, 16)
    finally:
        await stopped(service)
