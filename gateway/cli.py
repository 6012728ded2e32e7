"""`clawdbot serve gateway` (one gateway process) and `clawdbot up` (the whole mesh)."""

from __future__ import annotations

from pathlib import Path

import click

from clawdbot.shared.options import common_server_options


@click.command()
@common_server_options(50050)
@click.option("--http-port", type=int, default=None, help="REST / SSE / web page port [default: 8080].")
@click.option("--http-host", default=None, help="Address for the HTTP port [default: --host].")
@click.option("--tokenizer", "tokenizer_target", default=None, help="host:port of clawdbot.v1.Tokenizer.")
@click.option("--inference", "inference_target", default=None, help="host:port of clawdbot.v1.Inference.")
@click.option("--plugins", "plugins_target", default=None, help="host:port of clawdbot.v1.Plugins.")
@click.option("--memory", "memory_target", default=None, help="host:port of clawdbot.v1.Memory.")
@click.option("--model-name", default=None, help="The model name clients use [default: the served model's].")
def serve(
    config_file: Path | None,
    log_level: str | None,
    metrics_port: int | None,
    port: int | None,
    host: str | None,
    http_port: int | None,
    http_host: str | None,
    tokenizer_target: str | None,
    inference_target: str | None,
    plugins_target: str | None,
    memory_target: str | None,
    model_name: str | None,
) -> None:
    """Serve the OpenAI-compatible REST API, the web chat page and gRPC clawdbot.v1.Chat.

    Settings: `gateway:` in --config, CLAWDBOT_GATEWAY_* variables (API keys, rate limits,
    CORS, body size limit: see docs/gateway.md).
    """
    from clawdbot.gateway.server import serve_gateway
    from clawdbot.gateway.settings import GatewaySettings
    from clawdbot.shared import event_loop

    settings = GatewaySettings.load(
        config_file,
        host=host,
        port=port,
        metrics_port=metrics_port,
        log_level=log_level,
        http_port=http_port,
        http_host=http_host,
        tokenizer_target=tokenizer_target,
        inference_target=inference_target,
        plugins_target=plugins_target,
        memory_target=memory_target,
        model_name=model_name,
    )
    event_loop.run(serve_gateway(settings), settings.event_loop)


@click.command()
@click.option(
    "--port",
    type=int,
    default=8080,
    show_default=True,
    help="Front door HTTP port (REST, /readyz, chat page).",
)
@click.option(
    "--grpc-port",
    type=int,
    default=50050,
    show_default=True,
    help="Front door gRPC port (Chat and every service).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the front door binds.")
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model folder [default: the bundled demo model].",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Inference device [default: cuda when present].",
)
@click.option("--quantization", type=click.Choice(["int4", "none"]), default="none", show_default=True)
@click.option(
    "--replicas",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Inference service replicas behind Envoy.",
)
@click.option("--redis-url", default=None, help="Session memory in Redis [default: the embedded store].")
@click.option(
    "--plugins",
    "plugins_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="plugins.yaml [default: examples/shop/plugins.yaml].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML settings for every service.",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where each process logs [default: a temp folder].",
)
@click.option(
    "--ready-timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for the mesh."
)
@click.option(
    "--trace-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Export every process's spans to DIR/<process>.jsonl (one trace per chat turn).",
)
def up(
    port: int,
    grpc_port: int,
    host: str,
    model_dir: Path | None,
    device: str | None,
    quantization: str,
    replicas: int,
    redis_url: str | None,
    plugins_file: Path | None,
    config_file: Path | None,
    log_dir: Path | None,
    ready_timeout: float,
    trace_dir: Path | None,
) -> None:
    """Start the whole mesh behind Envoy, wait until it is ready, and stop it on Ctrl-C.

    Starts tokenizer, inference (--replicas N), plugins, memory and gateway as `clawdbot serve`
    processes on free ports, renders an Envoy config for them and starts Envoy as the front door.
    """
    from clawdbot.gateway.up import MeshOptions, run_mesh

    options = MeshOptions(
        http_port=port,
        grpc_port=grpc_port,
        host=host,
        model_dir=model_dir,
        device=device,
        quantization=quantization,
        replicas=replicas,
        redis_url=redis_url,
        plugins_file=plugins_file,
        config_file=config_file,
        log_dir=log_dir,
        ready_timeout=ready_timeout,
        trace_dir=trace_dir,
    )
    raise SystemExit(run_mesh(options))
