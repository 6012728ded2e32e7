"""`clawdbot up`: the whole mesh on one machine, behind Envoy.

Starts tokenizer, inference (N replicas), plugins, memory and the gateway as `clawdbot serve`
processes on free loopback ports, renders an Envoy config for them (the structure of
deploy/envoy/envoy.yaml), starts Envoy as the front door, waits for every process with a
progress display, prints how to reach the mesh and stops everything on Ctrl-C / SIGTERM.

The gateway calls the services through Envoy's gRPC port, so inference replicas are balanced,
health-checked and retried by Envoy; /readyz asks the replicas' health directly.
`Mesh` is also what the end-to-end tests start, so they exercise exactly this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from clawdbot.gateway.envoy import EnvoyPorts, envoy_binary, render, to_yaml
from clawdbot.shared.processes import ServiceProcess, free_port, wait_serving


class MeshError(RuntimeError):
    """The mesh cannot start as asked; the message says why and what to do."""


def default_model_dir() -> Path:
    from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR, DEFAULT_SERVING_MODEL

    return Path(DEFAULT_SERVING_MODEL or DEFAULT_MODEL_DIR)


def serving_folder(model_dir: Path, timeout: float = 900.0) -> Path:
    """`model_dir`, or for a base + adapter recipe its built folder (first start: a minute or two).

    Built by a child process, so this launcher never imports torch, and once, before the
    tokenizer and inference processes start, so they do not race to build it."""
    if not (model_dir / "base.json").is_file():
        return model_dir
    command = [sys.executable, "-m", "clawdbot.services.inference.model.adapter", str(model_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MeshError(f"building the serving model from {model_dir} took over {timeout:.0f} s") from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise MeshError(f"could not build the serving model from {model_dir}: {reason}")
    return Path(done.stdout.strip().splitlines()[-1])


def default_plugins_file() -> Path:
    """examples/shop/plugins.yaml of the working directory (a user's own copy), else the installed one."""
    from clawdbot.examples import SHOP_PLUGINS_FILE

    candidate = Path.cwd() / "examples" / "shop" / "plugins.yaml"
    return candidate if candidate.is_file() else SHOP_PLUGINS_FILE


def default_device() -> str:
    """cuda where a GPU is present, else cpu (asked of torch only when no --device was given)."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def has_weights(model_dir: Path) -> bool:
    return (model_dir / "config.json").is_file() and any(model_dir.glob("*.safetensors"))


@dataclass
class MeshOptions:
    http_port: int = 8080
    grpc_port: int = 50050
    host: str = "127.0.0.1"
    model_dir: Path | None = None
    device: str | None = None
    quantization: str = "none"
    replicas: int = 1
    redis_url: str | None = None
    plugins_file: Path | None = None
    config_file: Path | None = None
    log_dir: Path | None = None
    ready_timeout: float = 600.0
    trace_dir: Path | None = None  # each process exports its spans to <trace_dir>/<name>.jsonl
    gateway_env: dict[str, str] = field(default_factory=dict)  # extra CLAWDBOT_GATEWAY_* settings
    inference_args: list[str] = field(default_factory=list)


@dataclass
class Mesh:
    """The processes of one mesh and where they listen."""

    options: MeshOptions
    log_dir: Path = field(init=False)
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    envoy: subprocess.Popen[bytes] | None = None
    envoy_ports: EnvoyPorts = field(init=False)
    metrics_ports: dict[str, int] = field(default_factory=dict)  # Prometheus /metrics per service

    def __post_init__(self) -> None:
        o = self.options
        self.model_dir = serving_folder((o.model_dir or default_model_dir()).resolve())
        if not has_weights(self.model_dir):
            raise MeshError(
                f"The model folder {self.model_dir} has no weights (config.json + *.safetensors). "
                "The bundled demo model ships only its tokenizer for now; pass --model DIR with a "
                "Llama, Mistral or Qwen2 folder (Hugging Face layout)."
            )
        self.plugins_file = (o.plugins_file or default_plugins_file()).resolve()
        if not self.plugins_file.is_file():
            raise MeshError(f"The plugins file {self.plugins_file} does not exist; pass --plugins FILE.")
        self.log_dir = o.log_dir or Path(tempfile.mkdtemp(prefix="clawdbot-up-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if o.trace_dir is not None:
            o.trace_dir.mkdir(parents=True, exist_ok=True)
        self._plan()

    # -- the plan: ports and commands ------------------------------------------------------

    def _env(self, name: str) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.options.config_file is not None:
            env["CLAWDBOT_CONFIG"] = str(self.options.config_file)
        if self.options.trace_dir is not None:
            env["CLAWDBOT_OTEL_EXPORTER"] = "file"
            env["CLAWDBOT_OTEL_FILE"] = str(self.options.trace_dir / f"{name}.jsonl")
        return env

    def _service(self, name: str, service: str, args: list[str], env: dict[str, str] | None = None) -> None:
        if service != "gateway":  # the gateway serves /metrics on its HTTP port
            self.metrics_ports[name] = free_port()
            args = [*args, "--metrics-port", str(self.metrics_ports[name])]
        self.services[name] = ServiceProcess(
            service,
            free_port(),
            args,
            env={**self._env(name), **(env or {})},
            log_path=self.log_dir / f"{name}.log",
        )

    def _plan(self) -> None:
        o = self.options
        tokenizer_dir = (
            self.model_dir if (self.model_dir / "tokenizer.json").is_file() else default_model_dir()
        )
        self._service("tokenizer", "tokenizer", ["--model", str(tokenizer_dir)])
        inference_args = ["--model", str(self.model_dir), "--quantization", o.quantization, *o.inference_args]
        device = o.device or default_device()
        inference_args += ["--device", device]
        for i in range(o.replicas):
            self._service(f"inference-{i}", "inference", inference_args)
        self._service("plugins", "plugins", ["--plugins", str(self.plugins_file)])
        self._service("memory", "memory", ["--redis-url", o.redis_url] if o.redis_url else [])
        gateway_http = free_port()
        front_grpc = f"127.0.0.1:{o.grpc_port}"
        health = {
            "tokenizer": [self.services["tokenizer"].target],
            "inference": [p.target for n, p in self.services.items() if n.startswith("inference-")],
            "plugins": [self.services["plugins"].target],
            "memory": [self.services["memory"].target],
        }
        gateway_env = {"CLAWDBOT_GATEWAY_HEALTH_TARGETS": json.dumps(health), **o.gateway_env}
        if o.redis_url and "CLAWDBOT_GATEWAY_RATE_LIMIT_REDIS_URL" not in gateway_env:
            gateway_env["CLAWDBOT_GATEWAY_RATE_LIMIT_REDIS_URL"] = o.redis_url
        self._service(
            "gateway",
            "gateway",
            [
                "--http-port",
                str(gateway_http),
                *("--tokenizer", front_grpc, "--inference", front_grpc),
                *("--plugins", front_grpc, "--memory", front_grpc),
            ],
            gateway_env,
        )
        self.envoy_ports = EnvoyPorts(
            http_port=o.http_port,
            grpc_port=o.grpc_port,
            admin_port=free_port(),
            listen_host=o.host,
            gateway_http=("127.0.0.1", gateway_http),
            gateway_grpc=("127.0.0.1", self.services["gateway"].port),
            backends={
                "tokenizer": [("127.0.0.1", self.services["tokenizer"].port)],
                "inference": [
                    ("127.0.0.1", p.port) for n, p in self.services.items() if n.startswith("inference-")
                ],
                "plugins": [("127.0.0.1", self.services["plugins"].port)],
                "memory": [("127.0.0.1", self.services["memory"].port)],
            },
        )

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host
        return f"http://{host}:{self.options.http_port}"

    @property
    def grpc_target(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host
        return f"{host}:{self.options.grpc_port}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for process in self.services.values():
            process.start()
        config = self.log_dir / "envoy.yaml"
        config.write_text(to_yaml(render(self.envoy_ports)), encoding="utf-8")
        log = (self.log_dir / "envoy.log").open("ab")
        self.envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--log-level", "warn", "--disable-hot-restart"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait_ready(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Every process SERVING, then the front door's /readyz 200; bounded by ready_timeout."""
        deadline = time.monotonic() + self.options.ready_timeout

        async def one(name: str, process: ServiceProcess) -> None:
            try:
                await process.wait_serving(max(1.0, deadline - time.monotonic()))
            except (RuntimeError, TimeoutError) as exc:
                tail = "\n".join(process.log_text().splitlines()[-15:])
                raise MeshError(f"{name} did not start: {exc}\n--- {process.log_path} ---\n{tail}") from None
            if on_ready:
                on_ready(name)

        await asyncio.gather(*(one(n, p) for n, p in self.services.items()))
        await self._wait_front_door(deadline)
        if on_ready:
            on_ready("envoy")

    async def _wait_front_door(self, deadline: float) -> None:
        url = self.http_url + "/readyz"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while True:
                if self.envoy is not None and self.envoy.poll() is not None:
                    log = (self.log_dir / "envoy.log").read_text(errors="replace")[-2000:]
                    raise MeshError(f"envoy exited with code {self.envoy.returncode}:\n{log}")
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise MeshError(f"{url} not ready after {self.options.ready_timeout:.0f}s")
                await asyncio.sleep(0.25)

    def exited(self) -> str | None:
        """The name of a process that died, if one did."""
        for name, process in self.services.items():
            if process.process is not None and process.process.poll() is not None:
                return name
        if self.envoy is not None and self.envoy.poll() is not None:
            return "envoy"
        return None

    def stop(self) -> None:
        """Front door first (no new work), then the gateway (drains its streams), then the rest."""
        if self.envoy is not None and self.envoy.poll() is None:
            self.envoy.send_signal(signal.SIGTERM)
            try:
                self.envoy.wait(10)
            except subprocess.TimeoutExpired:
                self.envoy.kill()
                self.envoy.wait(5)
        gateway = self.services.get("gateway")
        if gateway is not None:
            gateway.stop(timeout=15)
        others = [p for n, p in self.services.items() if n != "gateway"]
        for process in others:  # SIGTERM all at once, so their drains overlap
            if process.process is not None and process.process.poll() is None:
                process.process.send_signal(signal.SIGTERM)
        for process in others:
            process.stop(timeout=15)


def _banner(console: Console, mesh: Mesh, model: str) -> None:
    url = mesh.http_url
    console.print(f"\n[bold green]Clawdbot is up.[/] Chat page: [link={url}/]{url}/[/link]")
    console.print("Try it:")
    console.print(
        f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "stream": true}}\'',
        markup=False,
        highlight=False,
    )
    console.print(f"gRPC (clawdbot.v1.Chat and every service): {mesh.grpc_target}")
    console.print(f"Logs: {mesh.log_dir}    Stop: Ctrl-C\n")


async def _run(options: MeshOptions, console: Console) -> int:
    mesh = Mesh(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    mesh.start()
    try:
        names = [*mesh.services, "envoy"]
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            tasks = {n: progress.add_task(f"starting {n}", total=1) for n in names}

            def ready(name: str) -> None:
                progress.update(tasks[name], completed=1, description=f"[green]{name} ready")

            waiting = asyncio.create_task(mesh.wait_ready(ready))
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped in done:
                waiting.cancel()
                console.print("interrupted while starting")
                return 130
            stopped.cancel()
            waiting.result()
        # The model name clients use is the one the mesh reports.
        name = "clawdbot"
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, KeyError):
            timeout = aiohttp.ClientTimeout(total=5)
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(mesh.http_url + "/v1/models") as resp,
            ):
                name = (await resp.json())["data"][0]["id"]
                console.print(f"Model: {name}")
        _banner(console, mesh, name)
        while not stop.is_set():
            dead = mesh.exited()
            if dead is not None:
                console.print(f"[red]{dead} exited; stopping the mesh (logs in {mesh.log_dir})")
                return 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        console.print("stopping…")
        return 0
    except MeshError as exc:
        console.print(f"[red]{exc}")
        return 1
    finally:
        await asyncio.to_thread(mesh.stop)
        console.print("stopped")


def run_mesh(options: MeshOptions) -> int:
    console = Console()
    try:
        return asyncio.run(_run(options, console))
    except MeshError as exc:
        console.print(f"[red]{exc}")
        return 2


__all__ = ["Mesh", "MeshError", "MeshOptions", "run_mesh", "wait_serving"]
