"""The edge's cross-cutting concerns, one middleware each, outermost first:
metrics -> CORS -> errors -> auth -> body size -> rate limit -> the handler.

Errors sit inside CORS so a refused browser request still gets its CORS headers, and inside
metrics so the status counted is the one the client saw.
"""

from __future__ import annotations

import hmac
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from clawdbot.gateway import metrics
from clawdbot.gateway.appkeys import LIMITER, SETTINGS
from clawdbot.gateway.errors import EdgeError, to_http

log = logging.getLogger("clawdbot.gateway.http")

TENANT = web.RequestKey("tenant", str)
API_KEY = web.RequestKey("api_key", str)
PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/static/", "/favicon.ico")


def _route_label(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = _route_label(request)
        metrics.HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origins = request.app[SETTINGS].cors_origins
    origin = request.headers.get("Origin")
    allowed = origin is not None and ("*" in origins or origin in origins)
    if request.method == "OPTIONS" and allowed and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    if allowed and not response.prepared:
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else str(origin)
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Session-Id"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        response.headers["Access-Control-Expose-Headers"] = "X-Session-Id, Retry-After"
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        status, body, headers = to_http(exc)
    except Exception as exc:
        status, body, headers = to_http(exc)
        if status >= 500:
            log.warning("request failed", extra={"path": request.path, "error": repr(exc), "status": status})
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`Authorization: Bearer KEY` when keys are configured; the key decides the tenant."""
    settings = request.app[SETTINGS]
    request[TENANT] = settings.default_tenant
    request[API_KEY] = "anonymous"
    if not settings.api_keys or request.path.startswith(PUBLIC_PATHS) or not request.path.startswith("/v1/"):
        if not settings.api_keys:
            request[API_KEY] = request.remote or "anonymous"
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise EdgeError(
            401,
            "You didn't provide an API key. Use the Authorization header: Bearer YOUR_KEY",
            "invalid_request_error",
            code="missing_api_key",
        )
    for key, tenant in settings.api_keys.items():
        if hmac.compare_digest(key.encode(), token.strip().encode()):
            request[TENANT] = tenant
            request[API_KEY] = key
            return await handler(request)
    raise EdgeError(401, "Incorrect API key provided", "invalid_request_error", code="invalid_api_key")


@web.middleware
async def body_size_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a declared oversize body before reading it (aiohttp's client_max_size catches the rest)."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise EdgeError(
            413,
            f"The request body is {request.content_length} bytes; the limit is {limit}",
            "invalid_request_error",
            code="request_too_large",
            headers={"Connection": "close"},
        )
    return await handler(request)


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limiter = request.app[LIMITER]
    if not limiter.enabled or request.method != "POST" or not request.path.startswith("/v1/"):
        return await handler(request)
    verdict = await limiter.admit(request[API_KEY])
    if not verdict.allowed:
        limit = limiter.rpm_for(request[API_KEY]) if verdict.limit == "requests" else limiter.tpm
        raise EdgeError(
            429,
            f"Rate limit reached: {limit} {verdict.limit} per minute for this API key. "
            f"Try again in {verdict.retry_after_s}s.",
            verdict.limit,
            code="rate_limit_exceeded",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
    return await handler(request)


MIDDLEWARES = [
    metrics_middleware,
    cors_middleware,
    error_middleware,
    auth_middleware,
    body_size_middleware,
    rate_limit_middleware,
]
