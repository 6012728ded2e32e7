"""Settings of the inference service (YAML section `inference`, env CLAWDBOT_INFERENCE_*)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from clawdbot.shared.config import ServiceSettings


class InferenceSettings(ServiceSettings):
    section: ClassVar[str] = "inference"

    port: int = 50052
    model: Path | None = None  # a Hugging Face folder (config.json + safetensors) or ours from `quantize`
    dummy: str | None = None  # or a named shape with random weights: "tiny", "ref-336m"
    quantization: Literal["none", "int4"] = "none"
    lm_head: Literal["16bit", "int4"] = "16bit"
    group_size: int = 128
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    block_size: int = 16
    num_kv_blocks: int | None = None  # None: as many as kv_cache_gb holds
    kv_cache_gb: float = 1.0
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 512
    max_waiting: int = 256
    # Decode steps one launch chains on the device when the batch is all decodes needing nothing from
    # the host between tokens (no penalties, logprobs or pending min_tokens) and no prompt waits to
    # join: the host's per-step Python is paid once for all of them (docs/inference.md). 1: off.
    decode_steps: int = Field(default=4, ge=1, le=16)
    # ... but only once no request has arrived for this long: a request that arrives while a chain
    # runs waits for it and for the one launched after it (~20 ms at 256 streams), so while calls
    # keep coming (a burst reaches the engine over ~100 ms) every step is a single one.
    decode_chain_quiet_ms: float = Field(default=50.0, ge=0.0)
    prefix_caching: bool = True
    # Grounded decoding (docs/inference.md): apply a request's `grounding`, so that every digit run
    # the model writes copies one of the grounding text. false: requests' grounding is ignored (an
    # operator's switch; ModelInfo.grounding then says false).
    grounding: bool = True
    gpu_memory_utilization: float = (
        0.9  # CUDA: share of the card for weights + KV cache (KV pool from what is free)
    )
    cuda_graphs: bool = True  # CUDA: capture decode graphs per batch bucket
    # Least time between two messages of one Generate stream: tokens sampled meanwhile go out together
    # in the next one. 0 sends each step's token at once; a few ms cuts the server's per-message work
    # under heavy load (docs/perf.md), the first token is never held back.
    stream_interval_ms: float = 0.0
    # ... and under load: the least time between two messages of a stream grows by this much for
    # every Generate stream open in this process (160 us x 256 streams = 41 ms; below 7 streams
    # nothing is held back). Every message costs this process tens of microseconds of Python; without
    # pacing, 256 streams kept its event loop busy, new calls waited up to a second for it, and one
    # client process could not read them all (docs/perf.md). 0 turns it off.
    stream_pacing_us: float = 160.0
    # ... and during a burst of new calls (16 within 50 ms, a rate no engine sustains): the streams
    # already open hold their messages this long, so the event loop accepts the new calls (one at
    # a time, a few turns of the loop each) and their first tokens go out sooner. 0 turns it off.
    stream_burst_hold_ms: float = 200.0
    # Run the engine (model, KV cache, step loop) in its own process, so the gRPC server's Python and
    # the step loop do not share one GIL (docs/inference.md). false: one process, as in the tests of
    # engine internals.
    engine_process: bool = True
    engine_start_timeout_s: float = (
        1800.0  # the engine core's load + warm-up, bounded (large models: minutes)
    )
    threads: int | None = None  # torch intra-op threads on the CPU (None: torch's default)
