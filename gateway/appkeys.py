"""Typed keys for what the aiohttp application shares between handlers and middlewares."""

from __future__ import annotations

from aiohttp import web

from clawdbot.gateway.pipeline import ChatPipeline
from clawdbot.gateway.ratelimit import RateLimiter
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.gateway.upstreams import Upstreams

SETTINGS = web.AppKey("settings", GatewaySettings)
UPSTREAMS = web.AppKey("upstreams", Upstreams)
PIPELINE = web.AppKey("pipeline", ChatPipeline)
LIMITER = web.AppKey("limiter", RateLimiter)
