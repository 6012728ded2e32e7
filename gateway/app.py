"""The aiohttp application factory: settings in, a ready `web.Application` out.

Upstream channels, the pipeline and the rate limiter are resources with a lifetime, opened and
closed by one cleanup context, so a test or `clawdbot serve gateway` gets the same app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from clawdbot.gateway import routes_mesh, routes_openai
from clawdbot.gateway.appkeys import LIMITER, PIPELINE, SETTINGS, UPSTREAMS
from clawdbot.gateway.middlewares import MIDDLEWARES
from clawdbot.gateway.openapi import openapi_document
from clawdbot.gateway.pipeline import ChatPipeline
from clawdbot.gateway.ratelimit import RateLimiter, build_rate_limiter
from clawdbot.gateway.settings import GatewaySettings
from clawdbot.gateway.upstreams import Upstreams


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def limiter_for(settings: GatewaySettings) -> RateLimiter:
    return build_rate_limiter(
        settings.requests_per_minute,
        settings.tokens_per_minute,
        settings.rate_limit_redis_url,
        settings.key_requests_per_minute,
    )


def create_app(
    settings: GatewaySettings, upstreams: Upstreams | None = None, limiter: RateLimiter | None = None
) -> web.Application:
    """The REST app. `upstreams` and `limiter` may be shared with the gRPC Chat service of the
    same process; when given, the caller owns (and closes) them."""
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    owned = upstreams is None

    async def resources(app: web.Application) -> AsyncIterator[None]:
        up = upstreams or Upstreams(settings)
        app[UPSTREAMS] = up
        app[PIPELINE] = ChatPipeline(up, settings)
        app[LIMITER] = limiter or limiter_for(settings)
        yield
        await app[PIPELINE].drain()
        if limiter is None:
            await app[LIMITER].counter.close()
        if owned:
            await up.close()

    app.cleanup_ctx.append(resources)
    app.add_routes(routes_openai.routes)
    app.add_routes(routes_mesh.routes)
    app.router.add_get("/openapi.json", openapi_json)
    return app
