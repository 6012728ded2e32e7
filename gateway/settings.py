"""The gateway's typed settings: its two ports, the upstream targets and the edge's security knobs.

Read like every service's settings (YAML section `gateway`, `CLAWDBOT_GATEWAY_<FIELD>`), so one
config file describes the whole mesh. `port` (from ServiceSettings) is the gRPC Chat port;
`http_port` is the REST / SSE / web page port.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from clawdbot.shared.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    section: ClassVar[str] = "gateway"

    port: int = 50050  # gRPC clawdbot.v1.Chat
    http_host: str | None = None  # None: the same as `host`
    http_port: int = 8080

    tokenizer_target: str = "127.0.0.1:50051"
    inference_target: str = "127.0.0.1:50052"
    plugins_target: str = "127.0.0.1:50053"
    memory_target: str = "127.0.0.1:50054"
    # Where /readyz asks gRPC health, per upstream, when calls go through Envoy (which routes by
    # service name and so cannot route a health check): the replicas' own addresses. An upstream
    # is ready when one of its addresses is SERVING. Empty: ask the call target itself.
    health_targets: dict[str, list[str]] = Field(default_factory=dict)

    # The name clients use in `model`; empty: the name the inference service reports.
    model_name: str = ""
    # Tokens kept free for the reply when the request names no max_tokens.
    default_max_tokens: int = 512
    # Check each chat reply against the plugins' context and replace one that fails (gateway/verify.py).
    verify_replies: bool = True
    # Send chat turns' prompt text as the engine's grounding (numbers only copy numbers in it).
    grounding: bool = True
    # Memory budget: at most this share of the context goes to stored history.
    history_share: float = Field(default=0.5, gt=0, le=1)
    # Messages kept per session by memory's trim (0: memory's default).
    max_session_messages: int = 0

    # API keys (Authorization: Bearer KEY) mapped to their tenant. Empty: no authentication,
    # every caller is `default_tenant`.
    api_keys: dict[str, str] = Field(default_factory=dict)
    default_tenant: str = "default"
    # Per-key limits per minute; 0 turns a limit off. Shared across replicas through Redis when
    # `rate_limit_redis_url` is set, otherwise counted in this process.
    requests_per_minute: int = 0
    key_requests_per_minute: dict[str, int] = Field(default_factory=dict)  # per-key overrides
    tokens_per_minute: int = 0
    rate_limit_redis_url: str | None = None

    max_body_bytes: int = 16 * 1024 * 1024
    cors_origins: list[str] = Field(default_factory=list)  # ["*"] allows every origin

    upstream_timeout_s: float = 30.0
    stream_timeout_s: float = 600.0

    def http_bind_host(self) -> str:
        return self.http_host or self.host
