"""The mesh's own routes: sessions, plugins, health, readiness, metrics and the chat page.

Sessions are the memory service's, seen through the caller's tenant (from the API key), so one
tenant can never read or delete another's conversations.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from clawdbot.gateway.appkeys import UPSTREAMS
from clawdbot.gateway.middlewares import TENANT
from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import common_pb2, memory_pb2, plugins_pb2

routes = web.RouteTableDef()
STATIC = resources.files("clawdbot.gateway") / "static"


def _iso(ts: Timestamp) -> str | None:
    return ts.ToJsonString() if ts.seconds or ts.nanos else None


def _key(request: web.Request) -> memory_pb2.SessionKey:
    session_id = request.match_info["session_id"]
    if not session_id or len(session_id) > 128:
        raise InvalidArgument("session id must have 1 to 128 characters", field="session_id")
    return memory_pb2.SessionKey(tenant=request[TENANT], session_id=session_id)


def message_json(m: common_pb2.ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"id": m.message_id, "role": m.role, "content": m.content}
    if m.parts:
        out["content_parts"] = [
            {"type": "text", "text": p.text}
            if p.WhichOneof("part") == "text"
            else {"type": "image_url", "image_url": {"url": p.image_url.url}}
            for p in m.parts
        ]
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    out["token_count"] = m.token_count
    out["created_at"] = _iso(m.created_at)
    return out


def meta_json(meta: memory_pb2.SessionMeta) -> dict[str, Any]:
    return {
        "id": meta.key.session_id,
        "object": "session",
        "created_at": _iso(meta.created_at),
        "updated_at": _iso(meta.updated_at),
        "user": meta.user,
        "model": meta.model,
        "labels": dict(meta.labels),
        "message_count": meta.message_count,
    }


@routes.get("/v1/sessions/{session_id}")
async def get_session(request: web.Request) -> web.Response:
    session = await request.app[UPSTREAMS].memory.GetSession(memory_pb2.GetSessionRequest(key=_key(request)))
    out = meta_json(session.meta)
    out["id"] = request.match_info["session_id"]
    out["summary"] = session.summary.text
    out["facts"] = dict(session.facts)
    return web.json_response(out)


@routes.get("/v1/sessions/{session_id}/messages")
async def get_session_messages(request: web.Request) -> web.Response:
    session = await request.app[UPSTREAMS].memory.GetSession(memory_pb2.GetSessionRequest(key=_key(request)))
    return web.json_response(
        {
            "object": "list",
            "session_id": request.match_info["session_id"],
            "data": [message_json(m) for m in session.messages],
        }
    )


@routes.delete("/v1/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAMS].memory.DeleteSession(
        memory_pb2.DeleteSessionRequest(key=_key(request))
    )
    return web.json_response(
        {"id": request.match_info["session_id"], "object": "session.deleted", "deleted": reply.deleted}
    )


@routes.get("/v1/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAMS].plugins.ListPlugins(plugins_pb2.ListPluginsRequest())
    data = [
        {
            "name": p.name,
            "kind": p.kind,
            "enabled": p.enabled,
            "order": p.order,
            "timeout_ms": p.timeout_ms,
            "on_error": p.on_error,
            "source": p.source,
            "description": p.description,
        }
        for p in reply.plugins
    ]
    return web.json_response({"object": "list", "data": data})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is up (liveness); says nothing about the upstreams."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when every upstream reports SERVING (readiness: route traffic here)."""
    upstreams = await request.app[UPSTREAMS].health()
    ready = all(upstreams.values())
    return web.json_response(
        {"status": "ready" if ready else "not_ready", "upstreams": upstreams}, status=200 if ready else 503
    )


@routes.get("/metrics")
async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8")


@routes.get("/static/{name}")
async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in types:
        raise web.HTTPNotFound()
    file = STATIC / name
    if not file.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=file.read_bytes(), content_type=types[suffix], charset="utf-8")
