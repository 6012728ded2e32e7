"""The engine: continuous batching, preemption, window memory, cancellation, stops, queue limits."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.events import StepEvent
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.scheduler import Scheduler, SchedulerConfig
from clawdbot.services.inference.sequence import Finish, SamplingParams, Sequence
from clawdbot.services.inference.testing import eventually, record_chain_lengths, reference_greedy, tiny_model
from clawdbot.shared.errors import ResourceExhausted

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def qwen2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2 with a full layer and two window-16 layers: two KV groups, QKV bias."""
    folder = tmp_path_factory.mktemp("qwen2")
    tiny_model("qwen2", folder, seed=11)
    return folder


@pytest.fixture(scope="module")
def mistral_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mistral")
    tiny_model("mistral", folder, seed=12)
    return folder


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full attention only: a sequence's blocks grow with it (no window gives any back)."""
    folder = tmp_path_factory.mktemp("llama")
    tiny_model("llama", folder, seed=13)
    return folder


def make_engine(folder: Path, **overrides: int | bool) -> Engine:
    model, config = load_model(folder)
    options: dict[str, int | bool] = {"block_size": 4, "num_blocks": 256, "max_num_batched_tokens": 32}
    options.update(overrides)
    return Engine(model, config, EngineConfig(**options), torch.device("cpu"), torch.float32)  # type: ignore[arg-type]


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 40, (count,), generator=generator).tolist()
    return [torch.randint(3, 512, (n,), generator=generator).tolist() for n in lengths]


def params_for(i: int) -> SamplingParams:
    """Half greedy, half seeded sampling: both must not depend on what else is in the batch."""
    if i % 2 == 0:
        return GREEDY
    return SamplingParams(temperature=0.8, top_k=50, top_p=0.9, seed=1000 + i, max_tokens=24, ignore_eos=True)


async def collect(
    queue: asyncio.Queue[StepEvent], midway: asyncio.Event | None = None
) -> tuple[list[int], StepEvent]:
    """All tokens of a request; sets `midway` once it has 6 tokens (or finished)."""
    tokens: list[int] = []
    while True:
        event = await asyncio.wait_for(queue.get(), timeout=60)
        tokens.extend(t.token for t in event.tokens)
        if midway is not None and (len(tokens) >= 6 or event.finish is not None):
            midway.set()
        if event.finish is not None:
            return tokens, event


async def alone(folder: Path, requests: list[list[int]]) -> list[list[int]]:
    engine = make_engine(folder, prefix_caching=False)
    engine.start()
    try:
        outputs = []
        for i, prompt in enumerate(requests):
            tokens, _ = await collect(engine.submit(Sequence(f"alone{i}", list(prompt), params_for(i))))
            outputs.append(tokens)
        return outputs
    finally:
        engine.stop()


async def staggered(engine: Engine, requests: list[list[int]]) -> list[list[int]]:
    """Groups of four arrive while the previous group is mid-generation."""
    engine.start()
    try:
        tasks: list[asyncio.Task[tuple[list[int], StepEvent]]] = []
        for group in range(0, len(requests), 4):
            midway = asyncio.Event()
            for i in range(group, min(group + 4, len(requests))):
                queue = engine.submit(Sequence(f"r{i}", list(requests[i]), params_for(i)))
                tasks.append(asyncio.create_task(collect(queue, midway if i == group else None)))
            await asyncio.wait_for(midway.wait(), timeout=60)
        return [tokens for tokens, _ in await asyncio.gather(*tasks)]
    finally:
        engine.stop()


async def test_staggered_continuous_batching_gives_each_request_its_solo_tokens(qwen2_folder: Path) -> None:
    requests = prompts(16)
    expected = await alone(qwen2_folder, requests)
    engine = make_engine(qwen2_folder)
    got = await staggered(engine, requests)
    assert got == expected
    assert engine.blocks.num_used() == 0 or not engine.blocks.tables  # everything given back


async def test_forced_preemption_still_gives_the_solo_tokens(qwen2_folder: Path) -> None:
    requests = prompts(16, seed=1)
    expected = await alone(qwen2_folder, requests)
    # 40 blocks of 4 tokens: about three requests fit at once, so running ones get preempted.
    engine = make_engine(qwen2_folder, num_blocks=40)
    got = await staggered(engine, requests)
    assert engine.scheduler.preemptions > 0
    assert got == expected
    assert not engine.blocks.tables
    engine.blocks.check()


def test_generation_matches_transformers_greedy(mistral_folder: Path) -> None:
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(str(mistral_folder), attn_implementation="eager").eval()
    prompt = prompts(1, seed=3)[0]
    engine = make_engine(mistral_folder)
    seq = Sequence("g", list(prompt), SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True))
    engine.scheduler.add(seq)
    while not seq.is_finished:
        engine.step()
    assert seq.output_ids == reference_greedy(reference, prompt, 32)


def test_window_blocks_stay_flat_over_four_windows(mistral_folder: Path) -> None:
    """Mistral, window 16, blocks of 4: generating 4x the window holds a constant number of blocks."""
    engine = make_engine(mistral_folder, num_blocks=64)
    seq = Sequence("long", [5, 6, 7, 8], SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True))
    engine.scheduler.add(seq)
    used: list[int] = []
    while not seq.is_finished:
        engine.step()
        if not seq.is_finished:
            used.append(engine.blocks.num_used())
    assert seq.num_output == 64
    after_window = used[20:]  # the window (16) plus a block has filled
    # window/block_size + 1 at most (a new block opens before the oldest slides out), never growing.
    assert max(after_window) <= 16 // 4 + 1
    assert max(after_window) - min(after_window) <= 1
    assert max(used[-16:]) == max(used[20:36])
    assert engine.blocks.num_used() == 0


@pytest.mark.parametrize("decode_steps", [1, 4], ids=["one-step", "chained"])
async def test_cancellation_frees_blocks_within_one_step(qwen2_folder: Path, decode_steps: int) -> None:
    """An abort frees the request's blocks within one step (a chain of decode steps counting as one:
    the abort waits for the chain in flight at most) and leaves the other request's tokens alone."""
    engine = make_engine(qwen2_folder, max_num_batched_tokens=64, decode_steps=decode_steps, chain_quiet_s=0)
    prompt_a, prompt_b = prompts(2, seed=4)
    long = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    expected_b = (await alone(qwen2_folder, [prompt_a, prompt_b]))[1]
    engine.start()
    try:
        queue_a = engine.submit(Sequence("a", list(prompt_a), long))
        queue_b = engine.submit(Sequence("b", list(prompt_b), params_for(1)))
        task_b = asyncio.create_task(collect(queue_b))
        first = await asyncio.wait_for(queue_a.get(), timeout=30)
        assert first.tokens and "a" in engine.blocks.tables
        steps_at_abort = engine.abort("a")
        _, final = await collect(queue_a)
        assert final.finish is Finish.ABORT
        assert "a" not in engine.blocks.tables
        # Freed at the latest by the step running when abort() was called.
        assert final.step - steps_at_abort <= 1, (final.step, steps_at_abort)
        tokens_b, done_b = await task_b
        assert tokens_b == expected_b and done_b.finish is Finish.LENGTH
        engine.blocks.check()
    finally:
        engine.stop()


def test_stop_ids_eos_and_min_tokens(mistral_folder: Path) -> None:
    engine = make_engine(mistral_folder)
    prompt = prompts(1, seed=5)[0]

    def run(params: SamplingParams) -> Sequence:
        seq = Sequence(f"s{time.monotonic_ns()}", list(prompt), params)
        engine.scheduler.add(seq)
        while not seq.is_finished:
            engine.step()
        return seq

    free = run(SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True))
    assert free.finish is Finish.LENGTH and free.num_output == 12
    target = free.output_ids[4]
    first_at = free.output_ids.index(target)
    stopped = run(SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=(target,)))
    assert stopped.finish is Finish.STOP and stopped.stop_token_id == target
    assert stopped.output_ids == free.output_ids[: first_at + 1]
    held = run(
        SamplingParams(temperature=0.0, max_tokens=12, stop_token_ids=(target,), min_tokens=first_at + 1)
    )
    assert target not in held.output_ids[: first_at + 1]
    # EOS from the config stops unless ignore_eos.
    engine.scheduler.eos = frozenset({target})
    assert run(SamplingParams(temperature=0.0, max_tokens=12)).finish is Finish.STOP
    assert run(SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)).finish is Finish.LENGTH


def test_waiting_queue_is_bounded(mistral_folder: Path) -> None:
    engine = make_engine(mistral_folder, max_waiting=2)
    engine.scheduler.add(Sequence("a", [1, 2, 3], GREEDY))
    engine.scheduler.add(Sequence("b", [1, 2, 3], GREEDY))
    with pytest.raises(ResourceExhausted):
        engine.scheduler.add(Sequence("c", [1, 2, 3], GREEDY))


def test_deadline_ends_a_request_with_abort(mistral_folder: Path) -> None:
    engine = make_engine(mistral_folder)
    seq = Sequence("late", [1, 2, 3], GREEDY, deadline=time.monotonic() - 1)
    engine.scheduler.add(seq)
    assert engine.scheduler.expire() == [seq]
    assert seq.finish is Finish.ABORT and not engine.scheduler.has_work


def test_prefix_cache_serves_a_shared_system_prompt(mistral_folder: Path) -> None:
    engine = make_engine(mistral_folder)
    system = prompts(1, seed=6)[0] * 2  # >= 10 tokens, several full blocks
    outputs = []
    for i, tail in enumerate(([7, 8], [9, 10])):
        seq = Sequence(
            f"p{i}", [*system, *tail], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)
        )
        engine.scheduler.add(seq)
        while not seq.is_finished:
            engine.step()
        outputs.append(seq)
    assert outputs[0].num_cached_prompt == 0
    assert outputs[1].num_cached_prompt >= len(system) // 4 * 4 - 4
    assert engine.blocks.cache_hits > 0


async def test_a_failing_step_fails_its_requests_and_the_engine_keeps_serving(
    mistral_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(mistral_folder)
    real_launch = engine.runner.launch
    calls = {"n": 0}

    def launch_failing_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected fault")
        return real_launch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.runner, "launch", launch_failing_once)
    engine.start()
    try:
        with pytest.raises(Exception, match="injected fault"):
            await engine.generate([5, 6, 7], GREEDY, "doomed")
        assert "doomed" not in engine.seqs and not engine.blocks.tables
        tokens = await engine.generate([5, 6, 7], GREEDY, "doomed")  # the id is free again
        assert len(tokens) == GREEDY.max_tokens
    finally:
        engine.stop()


def drive(engine: Engine, requests: list[tuple[list[int], SamplingParams]]) -> list[tuple[list[int], Finish]]:
    """Step the engine by hand (no thread) until every request is done; arrivals every other step."""
    seqs = [Sequence(f"q{i}", list(prompt), params) for i, (prompt, params) in enumerate(requests)]
    pending = list(seqs)
    for _ in range(2000):
        if pending:
            engine.scheduler.add(pending.pop(0))
        engine.step()
        if not pending and all(seq.is_finished for seq in seqs):
            break
    engine.step()  # resolve whatever is still in flight
    engine.blocks.check()
    assert not engine.blocks.tables
    return [(seq.output_ids, seq.finish) for seq in seqs if seq.finish is not None]


NO_LOGPROBS = st.just(False)


def request_strategy(
    max_tokens: int, min_tokens: st.SearchStrategy[int], logprobs: st.SearchStrategy[bool] = NO_LOGPROBS
) -> st.SearchStrategy[tuple[list[int], SamplingParams]]:
    """A prompt and sampling settings: greedy and seeded, some with penalties, stop ids, min_tokens."""
    return st.tuples(
        st.lists(st.integers(3, 511), min_size=1, max_size=30),
        st.builds(
            SamplingParams,
            temperature=st.sampled_from([0.0, 0.0, 0.9]),
            top_k=st.sampled_from([0, 20]),
            seed=st.integers(0, 1000),
            max_tokens=st.integers(1, max_tokens),
            repetition_penalty=st.sampled_from([1.0, 1.0, 1.3]),
            stop_token_ids=st.lists(st.integers(3, 511), max_size=40).map(tuple),
            min_tokens=min_tokens,
            logprobs=logprobs,
            ignore_eos=st.booleans(),
        ),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(request_strategy(12, st.integers(0, 3)), min_size=1, max_size=8),
    num_blocks=st.sampled_from([12, 40, 256]),
)
def test_pipelined_steps_give_exactly_the_unpipelined_outputs(
    mistral_folder: Path, requests: list[tuple[list[int], SamplingParams]], num_blocks: int
) -> None:
    """Launching step N+1 before step N's tokens are read changes nothing a client can see: stops,
    min_tokens, penalties (which turn pipelining off), seeds and preemption (small pools) included."""
    results = []
    for pipelined in (False, True):
        engine = make_engine(
            mistral_folder, num_blocks=num_blocks, max_num_batched_tokens=16, pipelined=pipelined
        )
        engine.scheduler.eos = frozenset({5, 6, 7})
        results.append(drive(engine, requests))
    assert results[0] == results[1]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(
        request_strategy(40, st.sampled_from([0, 0, 5]), st.sampled_from([False, False, False, True])),
        min_size=1,
        max_size=8,
    ),
    num_blocks=st.sampled_from([12, 40, 256]),
    decode_steps=st.sampled_from([2, 3, 4, 8]),
    pipelined=st.booleans(),
)
def test_chained_decode_steps_give_exactly_the_one_step_outputs(
    mistral_folder: Path,
    requests: list[tuple[list[int], SamplingParams]],
    num_blocks: int,
    decode_steps: int,
    pipelined: bool,
) -> None:
    """Several decode steps in one launch change nothing a client can see: seeds, stop tokens in the
    middle of a chain (the tokens after them dropped), max_tokens, min_tokens, logprobs and
    penalties (which run one step at a time), preemption in small pools."""
    one = make_engine(mistral_folder, num_blocks=num_blocks, max_num_batched_tokens=16)
    one.scheduler.eos = frozenset({5, 6, 7})
    chained = make_engine(
        mistral_folder,
        num_blocks=num_blocks,
        max_num_batched_tokens=16,
        pipelined=pipelined,
        decode_steps=decode_steps,
        chain_quiet_s=0,
    )
    chained.scheduler.eos = frozenset({5, 6, 7})
    assert drive(chained, requests) == drive(one, requests)


def test_a_chains_later_steps_get_their_positions_and_cache_slots_in_aligned_rows(qwen2_folder: Path) -> None:
    """Step k of a chain writes its K/V where the block tables say position + k lives (both of
    qwen2's KV groups), and every step's inputs start 16-byte aligned whatever the batch size (Triton
    compiles a kernel variant per pointer alignment)."""
    engine = make_engine(qwen2_folder, decode_steps=4, chain_quiet_s=0)
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    for i, prompt in enumerate(prompts(3, seed=7)):
        engine.scheduler.add(Sequence(f"c{i}", prompt, params))
    while not engine.scheduler.running or any(s.num_output < 3 for s in engine.scheduler.running):
        engine.step()
    engine.step()  # nothing left in flight
    batch = engine.scheduler.schedule()
    assert batch.steps == 4 and len(batch) == 3
    _, meta, _ = engine.runner.prepare(batch, engine.blocks)
    later = engine.runner._chain_metadata(meta, batch.steps)
    bs = engine.blocks.block_size
    for k in range(1, 4):
        step = later(k)
        positions = [seq.num_computed + k for seq in batch.seqs]
        assert step.positions.tolist() == positions
        assert step.context_lens.tolist() == [p + 1 for p in positions]
        for g, group in enumerate(step.groups):
            tables = [engine.blocks.tables[seq.request_id][g] for seq in batch.seqs]
            assert group.slot_mapping.tolist() == [
                t[p // bs] * bs + p % bs for t, p in zip(tables, positions, strict=True)
            ]
            assert group.slot_mapping.data_ptr() % 16 == 0
        assert step.positions.data_ptr() % 16 == 0 and step.context_lens.data_ptr() % 16 == 0


def test_a_stop_token_anywhere_in_a_chain_ends_the_request_where_one_step_at_a_time_does(
    mistral_folder: Path,
) -> None:
    """Stop tokens placed at every position of a chain (its first to its last step): the request
    ends on the same token, the tokens computed after it are dropped, its blocks come back."""
    prompt = prompts(1, seed=5)[0]
    free = drive(
        make_engine(mistral_folder),
        [(prompt, SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True))],
    )[0][0]
    # Each request stops at its first occurrence of the token at output position p: p = 3..14.
    requests = [
        (prompt, SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=(free[p],), ignore_eos=True))
        for p in range(3, 15)
    ]
    expected = drive(make_engine(mistral_folder), requests)
    positions = {len(tokens) for tokens, finish in expected if finish is Finish.STOP}
    engine = make_engine(mistral_folder, decode_steps=4, chain_quiet_s=0)
    steps = record_chain_lengths(engine.scheduler)
    assert drive(engine, requests) == expected
    assert max(steps) == 4
    assert len({p % 4 for p in positions}) == 4, "the stops do not cover every step of a chain"


def test_a_one_token_prompt_chunk_never_joins_a_chain(mistral_folder: Path) -> None:
    """With a step budget of one token more than the decodes, a prompt arriving meanwhile is
    prefilled one token a step; such a chunk samples nothing, and a chain built over it once
    failed the launch (one input id per sampling row, one metadata row per sequence)."""
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    requests = [(prompt[:5], params) for prompt in prompts(3, seed=8)] + [(prompts(1, seed=9)[0] * 3, params)]

    def run(**options: int) -> list[tuple[list[int], Finish]]:
        engine = make_engine(mistral_folder, max_num_batched_tokens=4, **options)
        for i, (prompt, request) in enumerate(requests[:3]):
            engine.scheduler.add(Sequence(f"d{i}", list(prompt), request))
        while any(s.num_output < 2 for s in [*engine.scheduler.running, *engine.scheduler.waiting]):
            engine.step()
        late = Sequence("late", list(requests[3][0]), params)
        engine.scheduler.add(late)
        while engine.scheduler.has_work or engine._in_flight is not None:
            engine.step()
        engine.blocks.check()
        return [(late.output_ids, late.finish)]  # type: ignore[list-item]

    assert run(decode_steps=4, chain_quiet_s=0) == run()


def test_a_request_longer_than_the_whole_pool_ends_with_length_instead_of_waiting_forever(
    llama_folder: Path,
) -> None:
    """A prompt bigger than the pool, and a request that outgrows it alone, end with LENGTH and
    give their blocks back; both once waited forever (the second preempting itself each step)."""

    async def run(prompt_length: int, max_tokens: int) -> tuple[int, StepEvent]:
        engine = make_engine(llama_folder, num_blocks=6)  # 24 tokens of K/V in all
        engine.start()
        try:
            prompt = list(range(3, 3 + prompt_length))
            params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
            tokens, final = await collect(engine.submit(Sequence("long", prompt, params)))
            assert await eventually(lambda: engine.blocks.num_used() == 0, timeout=10)
            return len(tokens), final
        finally:
            engine.stop()

    count, final = asyncio.run(run(40, 5))
    assert (count, final.finish) == (0, Finish.LENGTH)
    count, final = asyncio.run(run(8, 60))
    assert final.finish is Finish.LENGTH and 8 + count <= 24 and count >= 12


def test_a_chain_that_does_not_fit_reserves_nothing() -> None:
    """Two decodes, room in the pool for one of them to chain: neither reserves blocks for a chain
    (the first once kept blocks it had reserved before the second failed)."""
    blocks = BlockManager(3, 4, [0])
    config = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, decode_steps=4, chain_quiet_s=0)
    scheduler = Scheduler(config, blocks)
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True)
    for name in ("a", "b"):
        scheduler.add(Sequence(name, [5, 6, 7], params))  # 3 tokens: one block each, one slot left
    prefill = scheduler.schedule()
    assert prefill.steps == 1 and prefill.num_new == [3, 3]
    pending = scheduler.advance(prefill, prefill.sampling_rows())
    scheduler.resolve(prefill, pending, [9, 9])
    decode = scheduler.schedule()
    assert decode.num_new == [1, 1] and decode.steps == 1  # 2 blocks short, 1 free
    assert blocks.num_used() == 2
    blocks.check()


def test_a_decode_batch_chains_its_steps_and_a_waiting_prompt_stops_the_chaining(
    qwen2_folder: Path,
) -> None:
    """The chaining happens (so the test above compares something), across sliding-window blocks
    (qwen2's window-16 layers free blocks while a chain runs), and not while a prompt waits."""
    engine = make_engine(qwen2_folder, decode_steps=4, max_num_seqs=4, chain_quiet_s=0)
    steps = record_chain_lengths(engine.scheduler)
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    requests = [(prompt, params) for prompt in prompts(6, seed=3)]
    got = drive(engine, requests)
    assert [len(tokens) for tokens, _ in got] == [30] * 6
    assert max(steps) == 4 and steps.count(4) >= 10
    expected = drive(make_engine(qwen2_folder, max_num_seqs=4), requests)
    assert got == expected
    # Requests that arrived within `chain_quiet_s` keep every step a single one.
    engine = make_engine(qwen2_folder, decode_steps=4, max_num_seqs=4, chain_quiet_s=60)
    steps = record_chain_lengths(engine.scheduler)
    assert drive(engine, requests) == expected
    assert set(steps) == {1}


async def test_requests_added_for_a_sink_get_the_events_a_stream_gets_in_one_call_a_step(
    qwen2_folder: Path,
) -> None:
    """The engine core's path (`add`, events to a sink from the engine thread) against `submit`."""
    requests = prompts(6, seed=31)
    expected = await alone(qwen2_folder, requests)
    calls: list[list[tuple[str, StepEvent]]] = []
    done = threading.Event()
    engine = make_engine(qwen2_folder, prefix_caching=False)

    def sink(items: list[tuple[str, StepEvent]]) -> None:
        calls.append(items)
        finished = sum(1 for call in calls for _, event in call if event.finish is not None)
        if finished == len(requests):
            done.set()

    engine.sink = sink
    engine.start()
    try:
        for i, prompt in enumerate(requests):
            engine.add(Sequence(f"r{i}", list(prompt), params_for(i)))
        assert await asyncio.to_thread(done.wait, 60)
    finally:
        engine.stop()
    tokens: dict[str, list[int]] = {}
    for call in calls:
        ids = [request_id for request_id, _ in call]
        assert len(ids) == len(set(ids))  # one event per request per call: a call is a step
        for request_id, event in call:
            tokens.setdefault(request_id, []).extend(t.token for t in event.tokens)
    assert [tokens[f"r{i}"] for i in range(len(requests))] == expected
    assert not engine.streams


def test_add_without_a_sink_is_refused(qwen2_folder: Path) -> None:
    engine = make_engine(qwen2_folder)
    with pytest.raises(RuntimeError, match="sink"):
        engine.add(Sequence("x", [5, 6], GREEDY))


async def test_an_id_reused_while_the_aborted_request_is_in_flight_gets_its_own_tokens(
    qwen2_folder: Path,
) -> None:
    """Abort a request while its next step is on the device, resubmit the same id at once: resolving
    the old step must not touch the new request's blocks (it once registered the old request's
    tokens under the new one's block table, or failed with IndexError)."""
    first, second = prompts(2, seed=41)
    params = GREEDY  # what `alone` gives its first request
    [expected] = await alone(qwen2_folder, [second])
    engine = make_engine(qwen2_folder)
    engine._thread = threading.current_thread()  # stepped by hand below, on this thread
    old = engine.submit(Sequence("x", list(first), params))
    engine.step()  # the prefill resolved, the first decode step launched and in flight
    assert engine._in_flight is not None
    engine.abort("x")
    engine._apply_aborts()
    new = engine.submit(Sequence("x", list(second), params))
    while engine.scheduler.has_work or engine._in_flight is not None:
        engine.step()
    engine._flush()
    await asyncio.sleep(0)  # the puts scheduled by _flush
    _, old_last = await collect(old)
    assert old_last.finish is Finish.ABORT
    tokens, last = await collect(new)
    assert tokens == expected and last.finish is Finish.LENGTH
    engine.blocks.check()


async def test_a_late_abort_does_not_end_the_request_that_reused_the_id(qwen2_folder: Path) -> None:
    """An abort for a request that already ended (the client cancelled as the last token went out)
    must not end a new request that took the same id before the abort was applied."""
    [prompt] = prompts(1, seed=43)
    [expected] = await alone(qwen2_folder, [prompt])
    engine = make_engine(qwen2_folder)
    engine._thread = threading.current_thread()  # stepped by hand below, on this thread
    short = engine.submit(Sequence("x", [5, 6, 7], SamplingParams(temperature=0.0, max_tokens=2)))
    while engine.scheduler.has_work or engine._in_flight is not None:
        engine.step()
    engine.abort("x")  # late: "x" has ended
    new = engine.submit(Sequence("x", list(prompt), GREEDY))
    while engine.scheduler.has_work or engine._in_flight is not None:
        engine.step()
    engine._flush()
    await asyncio.sleep(0)
    _, first_last = await collect(short)
    assert first_last.finish is Finish.LENGTH
    tokens, last = await collect(new)
    assert tokens == expected and last.finish is Finish.LENGTH


async def test_a_loop_that_dies_calls_on_crash(qwen2_folder: Path) -> None:
    """The engine core exits on it (its parent then starts a new one) instead of hanging its requests."""
    engine = make_engine(qwen2_folder)
    crashed = threading.Event()

    def broken_sink(items: list[tuple[str, StepEvent]]) -> None:
        raise RuntimeError("the wire is broken")

    engine.sink = broken_sink
    engine.on_crash = crashed.set
    engine.start()
    try:
        engine.add(Sequence("x", [5, 6, 7], GREEDY))
        assert await asyncio.to_thread(crashed.wait, 30)
    finally:
        engine.stop()


def test_gauges_show_an_idle_engine_once_the_last_request_ended(mistral_folder: Path) -> None:
    """The running / waiting / KV gauges are set when a step is scheduled; the last step of a burst
    still counts the requests it finishes, so the engine sets them again when it goes idle (a
    scrape after a burst read 11 running requests on an idle engine before)."""

    def sample(name: str) -> float | None:
        return REGISTRY.get_sample_value(name)

    async def run() -> bool:
        engine = make_engine(mistral_folder)
        engine.start()
        try:
            await asyncio.gather(*(engine.generate(p, GREEDY, f"g{i}") for i, p in enumerate(prompts(6))))
            return await eventually(
                lambda: (
                    sample("clawdbot_inference_requests_running") == 0
                    and sample("clawdbot_inference_requests_waiting") == 0
                    and sample("clawdbot_inference_kv_blocks_used") == 0
                ),
                timeout=10,
            )
        finally:
            engine.stop()

    assert asyncio.run(run())


def test_latency_histograms_count_each_request_once_and_forget_it_when_it_ends(mistral_folder: Path) -> None:
    """One TTFT and one end-to-end observation per request, an inter-token gap for every later
    token, and no latency state left behind. A request's last token was once counted after it had
    finished: a second TTFT (its whole duration) for every request, one dict entry kept per request
    for the life of the process, and a reused id's first token taken for a gap."""

    def count(name: str) -> float:
        return REGISTRY.get_sample_value(f"clawdbot_inference_{name}_count") or 0.0

    names = ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_latency_seconds")
    lengths = [1, 2, 7, 24]
    engine = make_engine(mistral_folder)
    before = {name: count(name) for name in names}
    for _ in range(2):  # the same ids twice
        requests = [
            (prompt, SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))
            for prompt, n in zip(prompts(len(lengths)), lengths, strict=True)
        ]
        assert [len(tokens) for tokens, _ in drive(engine, requests)] == lengths
    got = {name: count(name) - before[name] for name in names}
    assert got == {
        "time_to_first_token_seconds": 2 * len(lengths),
        "inter_token_latency_seconds": 2 * sum(n - 1 for n in lengths),
        "e2e_latency_seconds": 2 * len(lengths),
    }
    assert not engine.metrics._previous_token


def test_chained_steps_count_every_token_in_the_latency_histograms(mistral_folder: Path) -> None:
    """A chained step's n tokens are n inter-token observations and n generated tokens."""

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(f"clawdbot_inference_{name}") or 0.0

    lengths = [1, 2, 9, 30]
    engine = make_engine(mistral_folder, decode_steps=4, chain_quiet_s=0)
    steps = record_chain_lengths(engine.scheduler)
    names = (
        "inter_token_latency_seconds_count",
        "time_to_first_token_seconds_count",
        "generation_tokens_total",
    )
    before = {name: value(name) for name in names}
    requests = [
        (prompt, SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True))
        for prompt, n in zip(prompts(len(lengths)), lengths, strict=True)
    ]
    assert [len(tokens) for tokens, _ in drive(engine, requests)] == lengths
    assert max(steps) > 1
    assert {name: value(name) - before[name] for name in names} == {
        "inter_token_latency_seconds_count": sum(n - 1 for n in lengths),
        "time_to_first_token_seconds_count": len(lengths),
        "generation_tokens_total": sum(lengths),
    }
    assert not engine.metrics._previous_token


def test_a_sequence_leaves_the_callers_prompt_alone() -> None:
    """The engine appends the reply to the sequence's tokens: to its own list, not the caller's (a
    caller submitting the same prompt twice once sent prompt + first reply the second time)."""
    prompt = [5, 6, 7]
    seq = Sequence("r", prompt, SamplingParams(max_tokens=4))
    seq.token_ids.append(9)
    assert prompt == [5, 6, 7] and seq.num_prompt == 3
