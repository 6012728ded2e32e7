"""The same engine on CUDA: parity in fp32, the tinygemm INT4 kernel in bf16, a batched run.

Marked `gpu`: skipped where no CUDA device is present (the CPU suite covers the logic).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from clawdbot.services.inference.attention import AttentionMetadata
from clawdbot.services.inference.block_manager import BlockManager
from clawdbot.services.inference.cuda_graphs import DecodeGraphs
from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.gpu import accelerate
from clawdbot.services.inference.model.decoder import kv_groups
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.model_runner import ModelRunner
from clawdbot.services.inference.prefill_graphs import PrefillGraphs
from clawdbot.services.inference.quant import Int4Linear, dequantize
from clawdbot.services.inference.scheduler import Batch
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.services.inference.testing import record_chain_lengths, tiny_model

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def test_fp32_prefill_logits_match_transformers_on_cuda(tmp_path: Path) -> None:
    hf = tiny_model("qwen2", tmp_path, seed=3).to(CUDA)
    prompt = torch.randint(3, 512, (40,), generator=torch.Generator().manual_seed(0)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([prompt], device=CUDA)).logits[0]
    model, config = load_model(tmp_path, device="cuda", dtype="float32")
    blocks = BlockManager(64, 16, kv_groups(config))
    runner = ModelRunner(model, config, 64, 16, CUDA, torch.float32)
    seq = Sequence("s", prompt, SamplingParams())
    blocks.admit(seq)
    assert blocks.reserve(seq, 40)
    input_ids, meta, rope_lens = runner.prepare(Batch([seq], [40]), blocks)
    ours = runner.forward_step(input_ids, meta, rope_lens, torch.arange(40, device=CUDA))
    assert (ours - ref).abs().max().item() <= 1e-4


def test_int4_uses_the_cuda_tinygemm_kernel_in_bf16() -> None:
    linear = torch.nn.Linear(1024, 512, bias=True).to(CUDA, torch.bfloat16)
    quantized = Int4Linear.from_linear(linear, 128, torch.bfloat16)
    quantized.prepare(torch.bfloat16)
    assert quantized.kernel == "cuda"
    x = torch.randn(8, 1024, device=CUDA, dtype=torch.bfloat16)
    reference = (
        x.float() @ dequantize(quantized.qweight, quantized.scales, quantized.zeros).t() + linear.bias.float()
    )
    got = quantized(x).float()
    assert ((got - reference).norm() / reference.norm()).item() < 2e-2


def test_engine_serves_a_batch_on_cuda_with_int4_weights(tmp_path: Path) -> None:
    tiny_model("mistral", tmp_path, seed=5, hidden_size=128, intermediate_size=256)
    model, config = load_model(tmp_path, device="cuda", dtype="bfloat16", quantization="int4")
    engine = Engine(model, config, EngineConfig(block_size=16, num_blocks=128), CUDA, torch.bfloat16)
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)

    async def run() -> list[list[int]]:
        engine.start()
        try:
            prompts = [[3 + i, 9, 27, 81, 100 + i] * (i + 1) for i in range(8)]
            return list(
                await asyncio.gather(*(engine.generate(p, params, f"r{i}") for i, p in enumerate(prompts)))
            )
        finally:
            engine.stop()

    outputs = asyncio.run(run())
    assert all(len(tokens) == 40 for tokens in outputs)
    assert engine.blocks.num_used() == 0


def graphed_engine(
    folder: Path, *, graphs: bool, decode_steps: int = 1, chain_quiet_s: float = 0.0
) -> Engine:
    """An fp32 engine on CUDA with Triton attention, and with prompt + decode graphs when `graphs`."""
    model, config = load_model(folder, device="cuda", dtype="float32")
    engine = Engine(
        model,
        config,
        EngineConfig(
            block_size=16,
            num_blocks=256,
            max_num_seqs=8,
            max_num_batched_tokens=256,
            decode_steps=decode_steps,
            chain_quiet_s=chain_quiet_s,
        ),
        CUDA,
        torch.float32,
    )
    accelerate(engine.runner, 8, config.context_length, 256, graphs=graphs)
    return engine


def generate_all(
    engine: Engine, prompts: list[list[int]], params: Callable[[int], SamplingParams]
) -> list[list[int]]:
    """Every prompt's tokens, all submitted at once to the started engine (request i with params(i))."""

    async def run_all() -> list[list[int]]:
        engine.start()
        try:
            return list(
                await asyncio.gather(*(engine.generate(p, params(i), f"r{i}") for i, p in enumerate(prompts)))
            )
        finally:
            engine.stop()

    return asyncio.run(run_all())


@pytest.mark.parametrize("family", ["qwen2", "mistral"])  # two KV groups (window + full); one window
def test_prompt_graphs_replay_the_eager_forward(tmp_path: Path, family: str) -> None:
    tiny_model(family, tmp_path, seed=11)
    engine = graphed_engine(tmp_path, graphs=True)
    runner, blocks = engine.runner, engine.blocks
    graphs = runner.prefill_graphs
    assert graphs is not None and graphs.buckets == [16, 32, 64, 128, 256]
    draw = torch.Generator().manual_seed(1)
    seqs = [
        Sequence(f"s{i}", torch.randint(3, 500, (n,), generator=draw).tolist(), SamplingParams())
        for i, n in enumerate([70, 37, 3, 1, 120])
    ]
    for seq in seqs:
        blocks.admit(seq)
    # The first 50 tokens of the first prompt are already in the cache: its chunk is a mixed step's.
    assert blocks.reserve(seqs[0], 50)
    ids, meta, _ = runner.prepare(Batch([seqs[0]], [50]), blocks)
    runner.model(ids, meta.positions, meta, runner.kv_caches)
    seqs[0].num_computed = 50
    chunks = [20, 37, 3, 1, 120]
    for seq, n in zip(seqs, chunks, strict=True):
        assert blocks.reserve(seq, n)
    ids, meta, _ = runner.prepare(Batch(seqs, chunks), blocks)
    assert graphs.fits(meta, len(seqs), len(ids))
    with torch.inference_mode():
        eager = runner.model(ids, meta.positions, meta, runner.kv_caches).clone()
        replayed = graphs.run(ids, meta).clone()
    assert replayed.shape == eager.shape == (181, runner.config.hidden_size)
    torch.testing.assert_close(replayed, eager, atol=1e-4, rtol=1e-4)


def test_engine_with_graphs_generates_the_eager_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_model("qwen2", tmp_path, seed=12)
    replays: list[int] = []
    run = PrefillGraphs.run

    def counted(self: PrefillGraphs, input_ids: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        replays.append(int(input_ids.shape[0]))
        return run(self, input_ids, meta)

    monkeypatch.setattr(PrefillGraphs, "run", counted)
    params = SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True)
    draw = torch.Generator().manual_seed(2)
    prompts = [
        torch.randint(3, 500, (n,), generator=draw).tolist() for n in (1, 5, 40, 130, 300, 17, 64, 255)
    ]

    eager = generate_all(graphed_engine(tmp_path, graphs=False), prompts, lambda _: params)
    assert not replays
    graphed = generate_all(graphed_engine(tmp_path, graphs=True), prompts, lambda _: params)
    assert replays, "no step went through the prompt graphs"
    assert graphed == eager


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_launching_a_step_never_waits_for_the_device(tmp_path: Path, graphs: bool) -> None:
    """The engine launches step N+1 while step N runs; that overlap holds only if a launch never
    waits for the device. A copy from pageable memory, an `.item()` or a boolean-mask index would
    (the prompt steps' row indices and every sampled batch's parameters once did): CUDA's sync
    debug mode turns any of them into an error here. Sampling of every kind, penalties, min_tokens
    and logprobs included, in a prompt step and in the decode step that follows it."""
    tiny_model("qwen2", tmp_path, seed=13)
    engine = graphed_engine(tmp_path, graphs=graphs)
    draw = torch.Generator().manual_seed(3)
    kinds = [
        SamplingParams(temperature=0.0, max_tokens=8),
        SamplingParams(temperature=0.8, top_k=20, top_p=0.9, min_p=0.01, seed=5, max_tokens=8),
        SamplingParams(temperature=0.7, repetition_penalty=1.2, presence_penalty=0.5, max_tokens=8),
        SamplingParams(temperature=0.0, min_tokens=4, stop_token_ids=(7,), logprobs=True, top_logprobs=2),
    ]
    for i, params in enumerate(kinds):
        prompt = torch.randint(3, 500, (10 + 30 * i,), generator=draw).tolist()  # 220 tokens: one step
        engine.scheduler.add(Sequence(f"s{i}", prompt, params))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        prompts = engine._launch()  # every prompt in one step
        decodes = engine._launch()  # their next tokens, read from the step still in flight
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert prompts is not None and decodes is not None
    assert len(prompts.batch) == len(decodes.batch) == len(kinds)
    assert max(decodes.batch.num_new) == 1
    for step in (prompts, decodes):
        tokens = [out.token for out in step.launched.outputs()]
        assert len(tokens) == len(kinds) and all(0 <= t < engine.config.vocab_size for t in tokens)


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_chained_decode_steps_on_cuda_give_the_one_step_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graphs: bool
) -> None:
    """Four decode steps a launch (replaying the decode graphs four times, or eagerly) give every
    request the tokens of one step a launch: greedy and seeded, across qwen2's window blocks."""
    tiny_model("qwen2", tmp_path, seed=14)
    replays: list[int] = []
    run = DecodeGraphs.run

    def counted(
        self: DecodeGraphs, input_ids: torch.Tensor, meta: AttentionMetadata, same_tables: bool = False
    ) -> torch.Tensor:
        replays.append(int(input_ids.shape[0]))
        return run(self, input_ids, meta, same_tables)

    monkeypatch.setattr(DecodeGraphs, "run", counted)
    draw = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, 500, (n,), generator=draw).tolist() for n in (1, 9, 40, 130, 17, 64)]
    kinds = [
        SamplingParams(temperature=0.0, max_tokens=45, ignore_eos=True),
        SamplingParams(temperature=0.9, top_k=40, top_p=0.95, seed=21, max_tokens=45, ignore_eos=True),
    ]

    one = generate_all(graphed_engine(tmp_path, graphs=graphs), prompts, lambda i: kinds[i % 2])
    replays.clear()
    engine = graphed_engine(tmp_path, graphs=graphs, decode_steps=4)
    steps = record_chain_lengths(engine.scheduler)
    chained = generate_all(engine, prompts, lambda i: kinds[i % 2])
    assert steps.count(4) >= 5
    assert bool(replays) == graphs
    assert chained == one


def test_launching_chained_decode_steps_never_waits_for_the_device(tmp_path: Path) -> None:
    """The chained steps' inputs (positions, slots from the tables, seeded noise counters) are made
    on the device: a launch of four decode steps does not wait for the step in flight either."""
    tiny_model("qwen2", tmp_path, seed=15)
    engine = graphed_engine(tmp_path, graphs=True, decode_steps=4)
    draw = torch.Generator().manual_seed(5)
    kinds = [
        SamplingParams(temperature=0.0, max_tokens=20),
        SamplingParams(temperature=0.8, top_k=20, top_p=0.9, min_p=0.01, seed=5, max_tokens=20),
    ]
    for i, params in enumerate(kinds):
        engine.scheduler.add(Sequence(f"s{i}", torch.randint(3, 500, (30,), generator=draw).tolist(), params))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        prompts = engine._launch()
        decodes = engine._launch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert prompts is not None and decodes is not None
    assert decodes.batch.steps == 4
    tokens = [out.token for out in decodes.launched.outputs()]
    assert len(tokens) == 4 * len(kinds) and all(0 <= t < engine.config.vocab_size for t in tokens)
