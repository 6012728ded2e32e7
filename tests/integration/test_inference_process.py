"""`clawdbot serve inference` as a real process: INT4 from the command line, health, metrics, drain."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from clawdbot.services.inference.engine import Engine, EngineConfig
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.sequence import SamplingParams
from clawdbot.services.inference.testing import tiny_model, torch_threads
from clawdbot.shared.channels import create_channel
from clawdbot.shared.processes import ServiceProcess, free_port
from clawdbot.v1 import inference_pb2, inference_pb2_grpc

METRICS = [
    "clawdbot_inference_requests_waiting",
    "clawdbot_inference_requests_running",
    "clawdbot_inference_kv_blocks_used_ratio",
    "clawdbot_inference_prefix_cache_hit_rate",
    "clawdbot_inference_preemptions_total",
    "clawdbot_inference_time_to_first_token_seconds_bucket",
    "clawdbot_inference_inter_token_latency_seconds_bucket",
    "clawdbot_inference_e2e_latency_seconds_bucket",
    "clawdbot_inference_prompt_tokens_total",
    "clawdbot_inference_generation_tokens_total",
]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


async def in_process_int4_greedy(folder: Path, prompt: list[int], steps: int) -> list[int]:
    model, config = load_model(folder, quantization="int4")
    engine = Engine(
        model, config, EngineConfig(block_size=16, num_blocks=64), torch.device("cpu"), torch.float32
    )
    engine.start()
    try:
        return await engine.generate(
            prompt, SamplingParams(temperature=0.0, max_tokens=steps, ignore_eos=True), "x"
        )
    finally:
        engine.stop()


async def test_serve_inference_int4_process(
    tmp_path: Path, port: int, service_process: list[ServiceProcess]
) -> None:
    folder = tmp_path / "model"
    tiny_model("mistral", folder, seed=30, hidden_size=128, intermediate_size=256)
    metrics_port = free_port()
    proc = ServiceProcess(
        "inference",
        port,
        args=[
            "--model",
            str(folder),
            "--quantization",
            "int4",
            "--metrics-port",
            str(metrics_port),
            "--num-kv-blocks",
            "128",
            "--log-level",
            "WARNING",
        ],
        env={"CLAWDBOT_INFERENCE_THREADS": "1"},
        log_path=tmp_path / "inference.log",
    ).start()
    service_process.append(proc)
    await proc.wait_serving(timeout=120)
    prompt = list(range(3, 40))
    async with create_channel(proc.target) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        info = await stub.ModelInfo(inference_pb2.ModelInfoRequest())
        assert info.quantization == "int4-g128" and info.architecture == "mistral"
        assert info.kv_capacity_tokens == 128 * 16 and info.device == "cpu"
        tokens: list[int] = []
        request = inference_pb2.GenerateRequest(
            prompt_token_ids=prompt,
            sampling=inference_pb2.SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True),
        )
        async for message in stub.Generate(request, timeout=60):
            tokens.extend(message.token_ids)
    assert tokens == await in_process_int4_greedy(folder, prompt, 16)
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    )
    for name in METRICS:
        assert name in body, name
    assert proc.stop(timeout=30) == 0, proc.log_text()


def test_a_model_folder_the_service_cannot_serve_stops_the_process(tmp_path: Path, port: int) -> None:
    tiny_model("llama", tmp_path, seed=31)
    config = tmp_path / "config.json"
    config.write_text(config.read_text().replace('"silu"', '"gelu"'))
    proc = ServiceProcess(
        "inference", port, args=["--model", str(tmp_path)], log_path=tmp_path / "log"
    ).start()
    try:
        assert proc.process is not None
        code = proc.process.wait(timeout=120)
    finally:
        proc.kill()
    assert code != 0
    assert "config.json:hidden_act" in proc.log_text()


@pytest.mark.parametrize("shape", ["tiny"])
def test_dummy_shape_loads_through_the_real_loader(shape: str, tmp_path: Path) -> None:
    from clawdbot.services.inference.dummy import write_dummy

    model, config = load_model(write_dummy(shape, tmp_path))
    assert config.architecture == "mistral" and config.layer_windows == (64,) * 4
    assert sum(p.numel() for p in model.parameters()) > 0
