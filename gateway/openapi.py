"""The OpenAPI 3.1 document served at /openapi.json.

Request bodies come from the same pydantic models that validate requests; response shapes are
written here next to the routes' list, and the schemathesis test checks both against the
running server.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from clawdbot import __version__
from clawdbot.gateway.openai_schema import ChatCompletionRequest, CompletionRequest

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


NULLABLE_STR = {"type": ["string", "null"]}
USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {"type": "object"},
    },
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": NULLABLE_STR,
                "code": NULLABLE_STR,
            },
        }
    },
}
CHAT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": NULLABLE_STR,
                            "tool_calls": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "logprobs": {"type": ["object", "null"]},
                    "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter"]},
                    "token_ids": {"type": "array", "items": {"type": "integer"}},
                },
            },
        },
        "usage": USAGE,
        "session_id": {"type": "string"},
        "sources": {"type": "array", "items": {"type": "object"}},
        "events": {"type": "array", "items": {"type": "object"}},
    },
}
TEXT_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "text_completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "text", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "text": {"type": "string"},
                    "logprobs": {"type": ["object", "null"]},
                    "finish_reason": {"enum": ["stop", "length", "content_filter"]},
                },
            },
        },
        "usage": USAGE,
    },
}
MODEL = {
    "type": "object",
    "required": ["id", "object", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "context_length": {"type": "integer"},
    },
}
MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
}
SESSION = {
    "type": "object",
    "required": ["id", "object", "message_count"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "session"},
        "created_at": NULLABLE_STR,
        "updated_at": NULLABLE_STR,
        "user": {"type": "string"},
        "model": {"type": "string"},
        "labels": {"type": "object"},
        "message_count": {"type": "integer"},
        "summary": {"type": "string"},
        "facts": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
SESSION_MESSAGES = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "session_id": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "role", "content"],
                "properties": {
                    "id": {"type": "string"},
                    "role": {"type": "string"},
                    "content": {"type": "string"},
                    "token_count": {"type": "integer"},
                },
            },
        },
    },
}
SESSION_DELETED = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "session.deleted"},
        "deleted": {"type": "boolean"},
    },
}
PLUGIN_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "kind", "enabled"],
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"type": "string"},
                    "enabled": {"type": "boolean"},
                },
            },
        },
    },
}
READY = {
    "type": "object",
    "required": ["status", "upstreams"],
    "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "upstreams": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Invalid request (OpenAI error shape, `param` names the field)",
        401: "Missing or wrong API key",
        404: "Unknown model or session",
        413: "Request body too large",
        429: "Rate limit reached",
        500: "Server error",
        502: "Upstream error",
        503: "An upstream service is unavailable",
        504: "An upstream timed out",
    }
    return {str(s): _json(_ref("Error"), texts[s]) for s in statuses}


API_ERRORS = (400, 401, 413, 429, 500, 502, 503, 504)
SESSION_PARAM = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$"},
}
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {}]


@cache
def openapi_document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(ChatCompletionRequest, "validation"), (CompletionRequest, "validation")], ref_template=REF
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas.update(
        Error=ERROR,
        ChatCompletion=CHAT_COMPLETION,
        TextCompletion=TEXT_COMPLETION,
        Model=MODEL,
        ModelList=MODEL_LIST,
        Session=SESSION,
        SessionMessages=SESSION_MESSAGES,
        SessionDeleted=SESSION_DELETED,
        PluginList=PLUGIN_LIST,
        Ready=READY,
    )
    sse = {"text/event-stream": {"schema": {"type": "string"}}}
    chat_ok = _json(_ref("ChatCompletion"), "A completion, or an SSE stream of chunks when `stream` is true")
    chat_ok["content"].update(sse)
    text_ok = _json(_ref("TextCompletion"), "A completion, or an SSE stream when `stream` is true")
    text_ok["content"].update(sse)
    session_errors = _errors(400, 401, 404, 429, 500, 502, 503, 504)
    paths = {
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "security": SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}},
                },
                "parameters": [
                    {"name": "X-Session-Id", "in": "header", "required": False, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": chat_ok,
                    "404": _json(_ref("Error"), "Unknown model"),
                    **_errors(*API_ERRORS),
                },
            }
        },
        "/v1/completions": {
            "post": {
                "operationId": "createCompletion",
                "security": SECURITY,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CompletionRequest")}},
                },
                "responses": {
                    "200": text_ok,
                    "404": _json(_ref("Error"), "Unknown model"),
                    **_errors(*API_ERRORS),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "security": SECURITY,
                "responses": {"200": _json(_ref("ModelList")), **_errors(401, 500, 502, 503, 504)},
            }
        },
        "/v1/sessions/{session_id}": {
            "get": {
                "operationId": "getSession",
                "security": SECURITY,
                "parameters": [SESSION_PARAM],
                "responses": {"200": _json(_ref("Session")), **session_errors},
            },
            "delete": {
                "operationId": "deleteSession",
                "security": SECURITY,
                "parameters": [SESSION_PARAM],
                "responses": {"200": _json(_ref("SessionDeleted")), **session_errors},
            },
        },
        "/v1/sessions/{session_id}/messages": {
            "get": {
                "operationId": "listSessionMessages",
                "security": SECURITY,
                "parameters": [SESSION_PARAM],
                "responses": {"200": _json(_ref("SessionMessages")), **session_errors},
            }
        },
        "/v1/plugins": {
            "get": {
                "operationId": "listPlugins",
                "security": SECURITY,
                "responses": {"200": _json(_ref("PluginList")), **_errors(401, 500, 502, 503, 504)},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "responses": {"200": _json({"type": "object", "required": ["status"]})},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "responses": {"200": _json(_ref("Ready")), "503": _json(_ref("Ready"), "Not ready")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Clawdbot gateway",
            "version": __version__,
            "description": "OpenAI-compatible chat API of the Clawdbot mesh, plus sessions, plugins and health.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
