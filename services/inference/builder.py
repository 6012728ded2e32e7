"""Building a ready engine from settings: load the model, size the KV pool, accelerate, warm up.

Runs where the engine lives: in the engine core process (`engine_core.py`) by default, or in the
service's own process with `engine_process: false`; benchmarks call it directly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import tempfile
from pathlib import Path

import torch

from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.dummy import write_digit_tokenizer, write_dummy
from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.gpu import accelerate, kv_blocks_for_gpu
from clawdbot.services.inference.grounding import DigitTokens
from clawdbot.services.inference.model.loader import load_model, resolve_dtype
from clawdbot.services.inference.sequence import SamplingParams
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.services.inference.validation import Limits
from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import inference_pb2

log = logging.getLogger("clawdbot.inference")
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def model_folder(settings: InferenceSettings) -> Path:
    if settings.model is not None:
        return settings.model
    if settings.dummy is not None:
        folder = Path(tempfile.mkdtemp(prefix=f"clawdbot-dummy-{settings.dummy}-"))
        write_dummy(settings.dummy, folder)
        return write_digit_tokenizer(folder)  # so that a dummy model can ground requests too
    raise InvalidArgument("give a model folder (--model) or a dummy shape (--dummy)", field="model")


def quantization_label(config: ModelConfig, settings: InferenceSettings) -> str:
    saved = config.quantization
    if saved is not None:
        return f"int4-g{saved.get('group_size', 128)}"
    return f"int4-g{settings.group_size}" if settings.quantization == "int4" else "none"


def digit_tokens(folder: Path) -> DigitTokens | None:
    """What each token of the model folder's tokenizer.json does to digit runs (grounded decoding),
    or None when it has none or cannot write every digit as one token (grounding is then unavailable)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        log.warning("no tokenizer.json in the model folder: grounded requests will be refused")
        return None
    digits = DigitTokens.from_tokenizer_file(path)
    if not digits.complete:
        log.warning("the tokenizer has no single token for some digit: grounded requests will be refused")
        return None
    return digits


def build_engine(settings: InferenceSettings) -> tuple[Engine, inference_pb2.ModelInfoResponse]:
    """Load the model and build the engine (blocking; run it off the event loop)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    folder = model_folder(settings)
    model, config = load_model(
        folder,
        device=device,
        dtype=settings.dtype,
        quantization=settings.quantization,
        lm_head=settings.lm_head,
        group_size=settings.group_size,
    )
    dtype = resolve_dtype(settings.dtype, device)
    num_blocks = settings.num_kv_blocks
    if device.type == "cuda" and num_blocks is None:
        num_blocks = kv_blocks_for_gpu(
            config, settings.block_size, dtype, device, settings.gpu_memory_utilization
        )
    engine = Engine(
        model,
        config,
        EngineConfig(
            block_size=settings.block_size,
            num_blocks=num_blocks,
            kv_cache_bytes=int(settings.kv_cache_gb * (1 << 30)),
            max_num_seqs=settings.max_num_seqs,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            max_waiting=settings.max_waiting,
            prefix_caching=settings.prefix_caching,
            decode_steps=settings.decode_steps,
            chain_quiet_s=settings.decode_chain_quiet_ms / 1000,
            grounding=settings.grounding,
        ),
        device,
        dtype,
        digits=digit_tokens(folder) if settings.grounding else None,
    )
    accelerate(
        engine.runner,
        settings.max_num_seqs,
        config.context_length,
        settings.max_num_batched_tokens,
        graphs=settings.cuda_graphs,
    )
    info = inference_pb2.ModelInfoResponse(
        name=settings.dummy or config.name,
        architecture=config.architecture,
        context_length=config.context_length,
        sliding_windows=list(config.layer_windows),
        quantization=quantization_label(config, settings),
        vocab_size=config.vocab_size,
        eos_token_ids=list(config.eos_token_ids),
        dtype=DTYPE_NAMES[dtype],
        device=str(device),
        num_layers=config.num_layers,
        kv_block_size=settings.block_size,
        kv_capacity_tokens=engine.capacity_tokens,
        max_num_seqs=settings.max_num_seqs,
        grounding=engine.grounding == "on",
    )
    return engine, info


def engine_limits(engine: Engine) -> Limits:
    return Limits(
        block_size=engine.engine_config.block_size,
        num_blocks=engine.num_blocks,
        full_attention=0 in engine.config.layer_windows,
        grounding=engine.grounding,
        grounding_digits=engine.runner.grounding.digit_tokens if engine.runner.grounding else frozenset(),
    )


# Prompt lengths the GPU warm-up prefills: one per tile configuration of the Triton kernels, with
# and without a multiple of 16 (Triton compiles a variant for each), up to the step budget.
GPU_WARM_UP_LENGTHS = (1, 3, 13, 16, 40, 64, 100, 512, 700, 2048)


WARM_UP_GROUNDING = "SO20261125001 ¥3999 2026-11-26 400-820-1234"  # digits of every kind a reply copies


async def warm_up(engine: Engine) -> None:
    """Short requests through the whole path, so the first clients do not pay for lazy init.

    On CUDA they also compile every Triton kernel variant a prefill will need (seconds each on
    first use, a stall of every stream if it happened under load): prompts of each length in
    GPU_WARM_UP_LENGTHS and one of the whole step budget, prefilled in one step each, then a wave
    of concurrent requests for the mixed steps of a loaded engine.
    """
    params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
    lengths = [3]
    if engine.device.type == "cuda":
        budget = engine.engine_config.max_num_batched_tokens
        longest = min(budget, engine.config.context_length - 2)
        lengths = sorted({min(n, longest) for n in (*GPU_WARM_UP_LENGTHS, longest)})
    draw = random.Random(0)

    def prompt(length: int) -> list[int]:
        return [draw.randrange(3, engine.config.vocab_size) for _ in range(length)]

    for i, length in enumerate(lengths):
        await engine.generate(prompt(length), params, request_id=f"__warmup{i}__")
    # Chat turns are grounded: the mask and automaton's kernels load now, not on a customer's first
    # turn (lazily loaded CUDA kernels cost ~ms each on first launch).
    grounding = WARM_UP_GROUNDING if engine.grounding == "on" else None
    if grounding is not None:
        await engine.generate(prompt(3), params, request_id="__warmup-grounded__", grounding=grounding)
    if engine.device.type == "cuda":
        # A wave of concurrent requests: mixed prefill + decode steps of many sizes, as under load.
        config = engine.engine_config
        count = min(config.max_num_seqs, config.max_waiting, 2 * config.max_num_batched_tokens // 128)
        wave = [prompt(draw.randrange(64, 192)) for _ in range(count)]
        await asyncio.gather(
            *(
                # every other one grounded: mixed batches, as chat turns and raw completions come
                engine.generate(
                    p, params, request_id=f"__warmup-wave{i}__", grounding=grounding if i % 2 else None
                )
                for i, p in enumerate(wave)
            )
        )
