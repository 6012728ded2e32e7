"""Settings of the memory service: where sessions live and how long, and the limits that protect them."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from clawdbot.shared.config import ServiceSettings

DEFAULT_PORT = 50054


class MemorySettings(ServiceSettings):
    """`memory:` in the YAML file, `CLAWDBOT_MEMORY_<FIELD>` in the environment."""

    section: ClassVar[str] = "memory"

    port: int = DEFAULT_PORT
    # None: the embedded in-process store (one process, lost on restart); a URL: Redis.
    redis_url: str | None = None
    # Sessions expire this long after their last use (append, facts, summary, GetContext); 0: never.
    ttl_seconds: float = Field(default=7 * 24 * 3600.0, ge=0)
    # Append trims the oldest messages beyond this when the request gives no max_messages.
    max_messages: int = Field(default=500, ge=1)
    # One stored message (serialized) may not exceed this; the gRPC limit (max_message_bytes) is larger.
    max_stored_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_append_messages: int = Field(default=256, ge=1)
    max_facts: int = Field(default=256, ge=1)
    list_page_size: int = Field(default=50, ge=1)
    max_list_page_size: int = Field(default=1000, ge=1)
    # The health watcher pings the store this often and flips gRPC health when it goes or comes back.
    health_interval_s: float = Field(default=1.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    # Redis client: pool size, timeouts, retries with exponential backoff on connection errors.
    redis_max_connections: int = Field(default=64, ge=1)
    redis_pool_timeout_s: float = Field(default=5.0, gt=0)
    redis_socket_timeout_s: float = Field(default=2.0, gt=0)
    redis_connect_timeout_s: float = Field(default=1.0, gt=0)
    redis_retries: int = Field(default=3, ge=0)
    redis_backoff_base_s: float = Field(default=0.05, gt=0)
    redis_backoff_cap_s: float = Field(default=0.5, gt=0)
    # Idle pooled connections are PINGed before reuse after this many seconds.
    redis_health_check_interval_s: int = Field(default=5, ge=0)
