"""tool: tools declared in YAML (an HTTP endpoint or a Python callable), offered to the model in
OpenAI's `tools` shape and run with a timeout after their arguments pass the JSON Schema.

`auto_invoke` runs a tool during Preprocess when a fact it needs is known (an order number the
entity plugin found), so an order-status turn is answered from data even by a small model.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.builtin.http_guard import GuardedClient, IPNetwork, Refused
from clawdbot.services.plugins.kinds import ToolPlugin
from clawdbot.services.plugins.registry import PluginResolveError, import_path
from clawdbot.services.plugins.types import (
    ContextItem,
    Contribution,
    Event,
    InputState,
    ToolDef,
    ToolOutcome,
    Turn,
)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class HttpEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    method: Literal["GET", "POST"] = "GET"  # GET sends the arguments as the query, POST as a JSON body
    headers: dict[str, str] = Field(default_factory=dict)


class ToolEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    http: HttpEndpoint | None = None
    python: str | None = (
        None  # "module.path:function"; called with the arguments (+ `context` if it takes one)
    )
    options: dict[str, Any] = Field(default_factory=dict)  # handed to a Python tool as context.options
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _one_target(self) -> ToolEntry:
        if (self.http is None) == (self.python is None):
            raise ValueError(f"tool {self.name!r} needs exactly one of `http` or `python`")
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.SchemaError as exc:
            raise ValueError(
                f"tool {self.name!r}: `parameters` is not a valid JSON Schema: {exc.message}"
            ) from exc
        return self


class AutoInvoke(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str
    when_fact: str  # run when this fact is known for the session
    when_intent: list[str] = Field(default_factory=list)  # and, if given, the turn has one of these intents
    arguments: dict[str, str] = Field(default_factory=dict)  # "{fact_name}" placeholders
    # Only when this turn produced the fact, not from earlier in the session (a mistyped number is
    # looked up once, to say it was not found, and not again on every later turn).
    this_turn_only: bool = False


class ToolSettings(PluginSettings):
    tools: list[ToolEntry] = Field(min_length=1)
    allowed_hosts: list[str] = Field(default_factory=list)
    # Private, loopback or link-local networks HTTP tools may reach (CIDRs); none by default.
    allowed_private_networks: list[str] = Field(default_factory=list)
    max_redirects: int = Field(default=3, ge=0, le=10)
    max_response_bytes: int = Field(default=256 * 1024, gt=0)
    auto_invoke: list[AutoInvoke] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ToolSettings:
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique: {names}")
        for rule in self.auto_invoke:
            if rule.tool not in names:
                raise ValueError(f"auto_invoke names unknown tool {rule.tool!r}")
        for net in self.allowed_private_networks:
            ipaddress.ip_network(net, strict=False)
        return self


@dataclass(frozen=True)
class ToolContext:
    """What a Python tool may use besides its arguments."""

    base_dir: Path
    options: dict[str, Any]
    turn: Turn = field(default_factory=Turn)

    def path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.base_dir / path


class DeclaredTools(ToolPlugin[ToolSettings]):
    settings_model = ToolSettings
    description = (
        "Tools from YAML: HTTP endpoints (allow-listed hosts only) and Python callables, schema-checked."
    )

    def __init__(self, name: str, settings: ToolSettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.entries = {t.name: t for t in settings.tools}
        self.validators = {t.name: jsonschema.Draft202012Validator(t.parameters) for t in settings.tools}
        self.callables: dict[str, Any] = {}
        networks: list[IPNetwork] = [
            ipaddress.ip_network(n, strict=False) for n in settings.allowed_private_networks
        ]
        self.http = GuardedClient(
            settings.allowed_hosts, networks, settings.max_redirects, settings.max_response_bytes
        )
        for tool in settings.tools:
            if tool.python is not None:
                try:
                    self.callables[tool.name] = import_path(tool.python)
                except PluginResolveError as exc:
                    raise ValueError(f"tool {tool.name!r}: {exc}") from exc
            elif tool.http is not None:
                from yarl import URL

                try:
                    self.http.check_url(URL(tool.http.url))
                except Refused as exc:
                    raise ValueError(f"tool {tool.name!r}: {exc}") from exc

    async def close(self) -> None:
        await self.http.close()

    def tools(self) -> list[ToolDef]:
        return [ToolDef(t.name, t.description, t.parameters) for t in self.settings.tools]

    async def invoke(self, name: str, arguments: dict[str, Any], turn: Turn) -> ToolOutcome:
        entry = self.entries[name]
        errors = sorted(self.validators[name].iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "(arguments)"
            return _error(f"invalid arguments at {where}: {errors[0].message}")
        try:
            async with asyncio.timeout(entry.timeout_s):
                if entry.python is not None:
                    return await self._call_python(entry, arguments, turn)
                return await self._call_http(entry, arguments)
        except Refused as exc:
            return _error(f"refused: {exc}")
        except TimeoutError:
            return _error(f"tool {name!r} did not answer within {entry.timeout_s}s")

    async def _call_python(self, entry: ToolEntry, arguments: dict[str, Any], turn: Turn) -> ToolOutcome:
        function = self.callables[entry.name]
        kwargs = dict(arguments)
        if "context" in inspect.signature(function).parameters:
            kwargs["context"] = ToolContext(self.context.base_dir, entry.options, turn)
        if inspect.iscoroutinefunction(function):
            result = await function(**kwargs)
        else:
            result = await asyncio.to_thread(function, **kwargs)
        return ToolOutcome(result if isinstance(result, str) else json.dumps(result, ensure_ascii=False))

    async def _call_http(self, entry: ToolEntry, arguments: dict[str, Any]) -> ToolOutcome:
        assert entry.http is not None
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in arguments.items()}
        result = await self.http.request(
            entry.http.method,
            entry.http.url,
            params=params if entry.http.method == "GET" else None,
            json_body=arguments if entry.http.method == "POST" else None,
            headers=entry.http.headers,
            timeout=entry.timeout_s,
        )
        if result.status >= 400:
            return _error(f"HTTP {result.status} from {result.url}: {result.body[:500]}")
        return ToolOutcome(result.body)

    async def preprocess(self, state: InputState) -> Contribution | None:
        contribution = Contribution(tools=self.tools())
        intent = state.metadata.get("intent") or state.turn.metadata.get("intent", "")
        for rule in self.settings.auto_invoke:
            known = state.facts.get(rule.when_fact) if rule.this_turn_only else state.fact(rule.when_fact)
            if known is None or (rule.when_intent and intent not in rule.when_intent):
                continue
            arguments = {
                key: _PLACEHOLDER.sub(lambda m: state.fact(m.group(1)) or "", template)
                for key, template in rule.arguments.items()
            }
            outcome = await self.invoke(rule.tool, arguments, state.turn)
            call = f"{rule.tool}({json.dumps(arguments, ensure_ascii=False)})"
            shown, answer, key_facts = _split_answer(outcome.content, state.language)
            contribution.context.append(
                ContextItem(
                    f"{call} -> {shown}",
                    f"tool:{rule.tool}",
                    rule.tool,
                    0.0 if outcome.is_error else _sureness(rule, state, intent),
                    answer=answer,
                    key_facts=key_facts,
                )
            )
            contribution.events.append(
                Event(
                    "tool_called",
                    self.name,
                    call,
                    {"tool": rule.tool, "is_error": str(outcome.is_error).lower()},
                )
            )
        return contribution


def _sureness(rule: AutoInvoke, state: InputState, intent: str) -> float:
    """1 when this turn named what the tool looked up; less when it came from earlier in the session,
    unless the turn asks about the same kind of thing (a follow-up such as "那个订单呢")."""
    if state.metadata.get("intent_also"):
        return 0.55  # the order is named, but a policy question about it is what the turn asks
    if state.facts.get(rule.when_fact):
        return 1.0
    return 0.85 if rule.when_intent and intent in rule.when_intent else 0.2


def _split_answer(content: str, language: str) -> tuple[str, str, list[str]]:
    """A tool result may carry `answer` and `key_facts` per language ({"zh": ..., "en": ...}): the
    extractive answer for the customer and the phrases a right reply has. They are taken out of what
    the model reads, which is the data itself."""
    try:
        result = json.loads(content)
    except ValueError:
        return content, "", []
    if not isinstance(result, dict) or "answer" not in result:
        return content, "", []
    answers = result.pop("answer") or {}
    facts = result.pop("key_facts", None) or {}
    lang = language if language in answers else next(iter(answers), "")
    return json.dumps(result, ensure_ascii=False), str(answers.get(lang, "")), list(facts.get(lang, []))


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(json.dumps({"error": message}, ensure_ascii=False), is_error=True)
