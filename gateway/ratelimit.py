"""Per-key rate limits: requests and tokens per minute.

Counters are fixed one-minute windows keyed by (api key, minute). In one process they live in a
dict; with `rate_limit_redis_url` they live in Redis (INCRBY + EXPIRE in one MULTI), so every
gateway replica counts against the same budget. A token limit is checked before a turn (the
window is not already spent) and charged after it with the real usage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: str = ""  # "requests" | "tokens"
    retry_after_s: int = 0


class Counter(Protocol):
    async def incr(self, key: str, amount: int) -> int: ...
    async def get(self, key: str) -> int: ...
    async def close(self) -> None: ...


class LocalCounter:
    """Counters of this process, forgetting windows older than the current one."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._window = 0

    def _roll(self) -> None:
        window = int(time.time() // 60)
        if window != self._window:
            self._counts.clear()
            self._window = window

    async def incr(self, key: str, amount: int) -> int:
        self._roll()
        self._counts[key] = self._counts.get(key, 0) + amount
        return self._counts[key]

    async def get(self, key: str) -> int:
        self._roll()
        return self._counts.get(key, 0)

    async def close(self) -> None:
        return None


class RedisCounter:
    """Counters shared by every replica through Redis."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)

    async def incr(self, key: str, amount: int) -> int:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expire(key, 120)
            value, _ = await pipe.execute()
        return int(value)

    async def get(self, key: str) -> int:
        value = await self._redis.get(key)
        return int(value or 0)

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        counter: Counter,
        per_key_rpm: dict[str, int] | None = None,
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.per_key_rpm = per_key_rpm or {}
        self.counter = counter

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm or self.per_key_rpm)

    def rpm_for(self, api_key: str) -> int:
        return self.per_key_rpm.get(api_key, self.rpm)

    @staticmethod
    def _keys(api_key: str) -> tuple[str, str, int]:
        now = time.time()
        window = int(now // 60)
        retry = max(1, 60 - int(now % 60))
        return f"clawdbot:rl:req:{api_key}:{window}", f"clawdbot:rl:tok:{api_key}:{window}", retry

    async def admit(self, api_key: str) -> Verdict:
        """Count one request; refuse it when this minute's requests or tokens are spent."""
        req_key, tok_key, retry = self._keys(api_key)
        if self.tpm and await self.counter.get(tok_key) >= self.tpm:
            return Verdict(False, "tokens", retry)
        rpm = self.rpm_for(api_key)
        if rpm and await self.counter.incr(req_key, 1) > rpm:
            return Verdict(False, "requests", retry)
        return Verdict(True)

    async def charge_tokens(self, api_key: str, tokens: int) -> None:
        if self.tpm and tokens > 0:
            _, tok_key, _ = self._keys(api_key)
            await self.counter.incr(tok_key, tokens)


def build_rate_limiter(
    rpm: int, tpm: int, redis_url: str | None, per_key_rpm: dict[str, int] | None = None
) -> RateLimiter:
    counter: Counter = RedisCounter(redis_url) if redis_url else LocalCounter()
    return RateLimiter(rpm, tpm, counter, per_key_rpm)
