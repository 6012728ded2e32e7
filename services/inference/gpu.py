"""What the engine does differently on a CUDA device: faster attention, CUDA graphs of decode and
prompt steps, a KV pool sized from the memory that is actually free.

Kept apart from the device-neutral engine so the CPU path has no CUDA branches: the service calls
`kv_blocks_for_gpu` before building the engine and `accelerate` after.
"""

from __future__ import annotations

import logging

import torch

from clawdbot.services.inference.config import ModelConfig
from clawdbot.services.inference.cuda_graphs import DecodeGraphs
from clawdbot.services.inference.model_runner import ModelRunner, kv_block_bytes
from clawdbot.services.inference.prefill_graphs import PrefillGraphs

log = logging.getLogger("clawdbot.inference.gpu")

# Kept free beside the KV pool for activations, the sampler, graph pools and allocator slack.
WORKSPACE_BYTES = 2 << 30


def kv_blocks_for_gpu(
    config: ModelConfig, block_size: int, dtype: torch.dtype, device: torch.device, utilization: float
) -> int:
    """KV blocks that fit in `utilization` of the card once the weights are loaded."""
    free, total = torch.cuda.mem_get_info(device)
    # Our share of the card, less what this process already holds (the weights), bounded by what is
    # really free: the card may be shared with other processes.
    ours = total * utilization - torch.cuda.memory_reserved(device)
    budget = min(ours, free) - WORKSPACE_BYTES
    blocks = int(budget // kv_block_bytes(config, block_size, dtype))
    if blocks < 2:
        raise RuntimeError(
            f"no room for a KV cache: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB at "
            f"gpu_memory_utilization={utilization}"
        )
    tokens = blocks * block_size
    log.info(
        "kv cache sized from free GPU memory",
        extra={
            "blocks": blocks,
            "tokens": tokens,
            "sequences_at_full_context": blocks // blocks_per_sequence(config, block_size),
            "gib": round(blocks * kv_block_bytes(config, block_size, dtype) / 2**30, 2),
        },
    )
    return blocks


def blocks_per_sequence(config: ModelConfig, block_size: int) -> int:
    """Blocks one sequence holds at most: the whole context, or its window (+1 block being filled)
    when every layer slides, since blocks that leave the window go back to the pool."""
    context = config.context_length
    windows = config.layer_windows or (0,)
    span = context if 0 in windows else min(max(windows), context)
    return -(-span // block_size) + (0 if span == context else 1)


def use_triton_attention(runner: ModelRunner) -> bool:
    """Swap the decoder's attention for the Triton kernels when they can run here."""
    from clawdbot.services.inference.kernels import triton_available, triton_paged_attention
    from clawdbot.services.inference.kernels.paged_attention import prefill_tile_tokens

    if runner.device.type != "cuda" or not triton_available():
        return False
    runner.model.backend = triton_paged_attention
    runner.tile_tokens = prefill_tile_tokens(runner.config.num_heads, runner.config.num_kv_heads)
    runner.model.fused = True  # the norm / RoPE / SiLU kernels need the same Triton
    return True


def accelerate(
    runner: ModelRunner,
    max_num_seqs: int,
    context_length: int,
    max_num_batched_tokens: int | None = None,
    *,
    graphs: bool = True,
) -> DecodeGraphs | None:
    """Triton attention, then CUDA graphs: of prompt steps for every token bucket up to
    `max_num_batched_tokens` (None: none), and of decode for every batch bucket up to `max_num_seqs`.

    Both share one memory pool: they never run at the same time. The prompt graphs are captured
    first, as the largest; their pool is what a step's activations need at the token budget, which
    the KV sizing's WORKSPACE_BYTES leaves room for. Sharing means a replay may overwrite another
    graph's output (a decode step's logits sit on memory a prompt graph uses for intermediates):
    the runner consumes a replay's output (sampling, on the same stream) before it queues the next
    replay, and whatever must outlive a step has to be copied out of the graph's output first.
    """
    if runner.device.type != "cuda":
        return None
    triton = use_triton_attention(runner)
    if not graphs or not triton or runner.config.rope.kind == "dynamic":
        log.info("cuda graphs off", extra={"triton": triton, "rope": runner.config.rope.kind})
        return None
    pool = None
    log.info(
        "capturing cuda graphs",
        extra={"reserved_gib": round(torch.cuda.memory_reserved(runner.device) / 2**30, 2)},
    )
    if max_num_batched_tokens:
        torch.cuda.empty_cache()  # load-time blocks: the capture's peak is then the pool alone
        prefill = PrefillGraphs(runner, max_num_batched_tokens, max_num_seqs, context_length)
        pool = prefill.capture()
        runner.prefill_graphs = prefill
    decode = DecodeGraphs(runner, max_num_seqs, context_length)
    decode.capture(pool)
    runner.decode_graphs = decode
    torch.cuda.empty_cache()  # the eager warm-up runs' blocks; the graphs keep their own pool
    log.info(
        "cuda graphs ready",
        extra={"reserved_gib": round(torch.cuda.memory_reserved(runner.device) / 2**30, 2)},
    )
    return decode
