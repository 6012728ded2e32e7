"""Grounded decoding on CUDA: chained steps replaying the decode graphs give the one-step tokens,
every reply copies only runs of its grounding, and a grounded launch never waits for the device.

Marked `gpu`: skipped where no CUDA device is present (test_grounding.py covers the logic on the CPU).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.gpu import accelerate
from clawdbot.services.inference.grounding import DigitTokens
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.sequence import SamplingParams, Sequence
from clawdbot.services.inference.testing import (
    digit_vocabulary,
    record_chain_lengths,
    runs_are_grounded,
    tiny_model,
)

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
TABLE = digit_vocabulary(512)
TEXTS = ["订单 20261126，运单 SF1420261123887，金额 199.00", "", "７７ 12 1234 123456", None]


def grounded_engine(folder: Path, *, graphs: bool, decode_steps: int) -> Engine:
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
            chain_quiet_s=0.0,
        ),
        CUDA,
        torch.float32,
        digits=DigitTokens.of(TABLE),
    )
    accelerate(engine.runner, 8, config.context_length, 256, graphs=graphs)
    return engine


def kinds(i: int) -> SamplingParams:
    if i % 2:
        return SamplingParams(
            temperature=0.9, top_k=40, top_p=0.95, seed=21 + i, max_tokens=40, ignore_eos=True
        )
    return SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)


def run_all(engine: Engine, prompts: list[list[int]]) -> list[list[int]]:
    async def go() -> list[list[int]]:
        engine.start()
        try:
            queues = [
                engine.submit(Sequence(f"r{i}", p, kinds(i), grounding=TEXTS[i % len(TEXTS)]))
                for i, p in enumerate(prompts)
            ]
            results = []
            for queue in queues:
                tokens: list[int] = []
                while True:
                    event = await queue.get()
                    tokens += [t.token for t in event.tokens]
                    if event.finish is not None:
                        break
                results.append(tokens)
            return results
        finally:
            engine.stop()

    return asyncio.run(go())


@pytest.mark.parametrize("graphs", [True, False], ids=["graphs", "eager"])
def test_grounded_chained_steps_on_cuda_give_the_one_step_tokens(tmp_path: Path, graphs: bool) -> None:
    tiny_model("qwen2", tmp_path, seed=16)
    draw = torch.Generator().manual_seed(6)
    prompts = [torch.randint(3, 500, (n,), generator=draw).tolist() for n in (1, 9, 40, 130, 17, 64, 5, 33)]
    one = run_all(grounded_engine(tmp_path, graphs=graphs, decode_steps=1), prompts)
    engine = grounded_engine(tmp_path, graphs=graphs, decode_steps=4)
    steps = record_chain_lengths(engine.scheduler)
    chained = run_all(engine, prompts)
    assert steps.count(4) >= 3
    assert chained == one
    for i, tokens in enumerate(one):
        text = TEXTS[i % len(TEXTS)]
        if text is not None:
            assert runs_are_grounded(tokens, TABLE, text, cut=True)
    assert engine.runner.grounding is not None and engine.runner.grounding.num_attached == 0


def test_a_grounded_launch_never_waits_for_the_device(tmp_path: Path) -> None:
    """Attaching the tries (prompt step), masking, sampling and advancing the automaton on the
    device (chained decode step): nothing waits for the step in flight."""
    tiny_model("qwen2", tmp_path, seed=17)
    engine = grounded_engine(tmp_path, graphs=True, decode_steps=4)
    draw = torch.Generator().manual_seed(7)
    for i in range(4):
        prompt = torch.randint(3, 500, (30,), generator=draw).tolist()
        seq = Sequence(f"s{i}", prompt, kinds(i), grounding=TEXTS[i])
        engine._ground(seq)
        engine.scheduler.add(seq)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        prompts = engine._launch()
        decodes = engine._launch()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert prompts is not None and decodes is not None and decodes.batch.steps == 4
    tokens = [out.token for out in decodes.launched.outputs()]
    assert len(tokens) == 16 and all(0 <= t < engine.config.vocab_size for t in tokens)
