"""The shipped Envoy config is the rendering of the default ports and Envoy accepts it; the config
`clawdbot up` renders for other ports and replica counts is accepted too; `clawdbot up` refuses
a model folder without weights with a message that says what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from clawdbot.gateway.envoy import EnvoyPorts, compose_ports, render, to_yaml, validate

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHIPPED = DEPLOY / "envoy" / "envoy.yaml"
CONTAINER_CONFIGS = (DEPLOY / "compose" / "envoy.yaml", DEPLOY / "k8s" / "envoy.yaml")


def test_shipped_config_is_the_default_rendering() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == to_yaml(render(EnvoyPorts())), (
        "deploy/envoy/envoy.yaml is stale: python -m clawdbot.gateway.envoy > deploy/envoy/envoy.yaml"
    )


def test_envoy_validates_the_shipped_config() -> None:
    result = validate(SHIPPED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_compose_and_k8s_configs_are_the_service_name_rendering_and_valid() -> None:
    expected = to_yaml(render(compose_ports()))
    for path in CONTAINER_CONFIGS:
        assert path.read_text(encoding="utf-8") == expected, (
            f"{path} is stale: python -m clawdbot.gateway.envoy compose"
        )
        result = validate(path)
        assert result.returncode == 0, result.stdout + result.stderr
    clusters = {c["name"]: c for c in render(compose_ports())["static_resources"]["clusters"]}
    assert clusters["inference"]["type"] == "STRICT_DNS"  # every replica DNS returns is an endpoint


def test_envoy_validates_a_rendered_mesh_with_three_replicas(tmp_path: Path) -> None:
    ports = EnvoyPorts(
        http_port=18080,
        grpc_port=18081,
        admin_port=18082,
        backends={
            "tokenizer": [("127.0.0.1", 20001)],
            "inference": [("127.0.0.1", 20002), ("127.0.0.1", 20003), ("127.0.0.1", 20004)],
            "plugins": [("127.0.0.1", 20005)],
            "memory": [("127.0.0.1", 20006)],
        },
    )
    config = render(ports)
    path = tmp_path / "envoy.yaml"
    path.write_text(to_yaml(config), encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    clusters = {c["name"]: c for c in yaml.safe_load(path.read_text())["static_resources"]["clusters"]}
    endpoints = clusters["inference"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert len(endpoints) == 3
    assert (
        clusters["inference"]["health_checks"][0]["grpc_health_check"]["service_name"]
        == "clawdbot.v1.Inference"
    )
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_up_refuses_a_model_folder_without_weights(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clawdbot.shared.cli",
            "up",
            "--model",
            str(tmp_path),
            "--port",
            "1",
            "--grpc-port",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "has no weights" in result.stdout and "--model DIR" in result.stdout
