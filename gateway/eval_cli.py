"""`clawdbot eval FILE.jsonl`: score conversations through the whole mesh (the gateway's REST API).

Each line is one conversation: {"id", "category", "lang", "turns": [{"user": "...", "expect": {...}}]}.
Expectations of a turn, all optional: `contains` (phrases the reply must all hold; case-insensitive),
`contains_any` (at least one of them), `not_contains` (none of them), `lang` ("zh" / "en": the
reply's language), `intent` (the intent event's label), `tool` (a tool the plugins or the model
called), `handoff` (true: a hand-off event; false: none). A turn passes when all its expectations
hold. The report also counts, per category, the replies the gateway replaced with its extractive
answer (the `reply_replaced` event), which must stay a safety net, not the answer engine. Every
conversation gets its own session id, so later turns see the earlier ones through memory.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from clawdbot.shared.script import cjk_share


@dataclass
class TurnResult:
    conversation: str
    category: str
    turn: int
    user: str
    reply: str
    checks: dict[str, bool]
    latency_s: float
    error: str = ""
    lang: str = ""
    replaced: bool = False

    @property
    def passed(self) -> bool:
        return not self.error and all(self.checks.values())


@dataclass
class Report:
    results: list[TurnResult] = field(default_factory=list)

    def by_category(self) -> dict[str, tuple[int, int]]:
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in self.results:
            table[r.category][0] += int(r.passed)
            table[r.category][1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(table.items())}

    def by_language(self) -> dict[str, tuple[int, int]]:
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in self.results:
            table[r.lang or "?"][0] += int(r.passed)
            table[r.lang or "?"][1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(table.items())}

    def replaced_by_category(self) -> dict[str, tuple[int, int]]:
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in self.results:
            table[r.category][0] += int(r.replaced)
            table[r.category][1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(table.items())}

    @property
    def replaced_share(self) -> float:
        return sum(r.replaced for r in self.results) / max(1, len(self.results))

    def by_check(self) -> dict[str, tuple[int, int]]:
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in self.results:
            for name, ok in r.checks.items():
                table[name][0] += int(ok)
                table[name][1] += 1
        return {k: (v[0], v[1]) for k, v in sorted(table.items())}

    @property
    def accuracy(self) -> float:
        return sum(r.passed for r in self.results) / max(1, len(self.results))

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "turns": len(self.results),
            "by_category": {
                k: {"passed": p, "total": t, "accuracy": round(p / t, 4)}
                for k, (p, t) in self.by_category().items()
            },
            "by_language": {
                k: {"passed": p, "total": t, "accuracy": round(p / t, 4)}
                for k, (p, t) in self.by_language().items()
            },
            "replaced_share": round(self.replaced_share, 4),
            "replaced_by_category": {
                k: {"replaced": n, "total": t, "share": round(n / t, 4)}
                for k, (n, t) in self.replaced_by_category().items()
            },
            "by_check": {
                k: {"passed": p, "total": t, "accuracy": round(p / t, 4)}
                for k, (p, t) in self.by_check().items()
            },
            "results": [{**r.__dict__, "passed": r.passed} for r in self.results],
        }


def reply_language(reply: str) -> str:
    """ "zh" when a third or more of the letters are Chinese characters, else "en"."""
    return "zh" if cjk_share(reply) >= 0.3 else "en"


def score_turn(expect: dict[str, Any], reply: str, events: list[dict[str, Any]]) -> dict[str, bool]:
    checks: dict[str, bool] = {}
    lowered = reply.lower()
    for phrase in expect.get("contains", []):
        checks[f"contains:{phrase}"] = phrase.lower() in lowered
    if expect.get("contains_any"):
        checks["contains_any"] = any(p.lower() in lowered for p in expect["contains_any"])
    for phrase in expect.get("not_contains", []):
        checks[f"not_contains:{phrase}"] = phrase.lower() not in lowered
    if expect.get("lang") in ("zh", "en"):
        checks["lang"] = reply_language(reply) == expect["lang"]
    if "intent" in expect:
        intents = {e.get("data", {}).get("intent") for e in events if e.get("type") == "intent"}
        checks["intent"] = expect["intent"] in intents
    if "tool" in expect:
        tools = {e.get("data", {}).get("tool") for e in events if e.get("type") == "tool_called"}
        checks["tool"] = expect["tool"] in tools
    if "handoff" in expect:
        checks["handoff"] = any(e.get("type") == "handoff" for e in events) == bool(expect["handoff"])
    return checks


async def run_conversation(
    client: httpx.AsyncClient, conv: dict[str, Any], model: str, max_tokens: int
) -> list[TurnResult]:
    session = f"eval-{conv['id']}-{uuid.uuid4().hex[:8]}"
    results = []
    for n, turn in enumerate(conv["turns"]):
        started = time.perf_counter()
        body = {
            "model": model,
            "messages": [{"role": "user", "content": turn["user"]}],
            "temperature": 0,
            "max_tokens": max_tokens,
            "session_id": session,
        }
        reply, events, error = "", [], ""
        try:
            response = await client.post("/v1/chat/completions", json=body)
            data = response.json()
            if response.status_code != 200:
                error = f"HTTP {response.status_code}: {data.get('error', {}).get('message', '')}"
            else:
                reply = data["choices"][0]["message"].get("content") or ""
                events = data.get("events", [])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        checks = {} if error else score_turn(turn.get("expect", {}), reply, events)
        results.append(
            TurnResult(
                conv["id"],
                conv.get("category", "other"),
                n,
                turn["user"],
                reply,
                checks,
                round(time.perf_counter() - started, 3),
                error,
                turn.get("expect", {}).get("lang") or conv.get("lang", ""),
                any(e.get("type") == "reply_replaced" for e in events),
            )
        )
    return results


async def wait_ready(client: httpx.AsyncClient, timeout: float, console: Console) -> None:
    """Until the mesh's /readyz says ready (the model loads after the front door is up), bounded by
    `timeout`; a server without /readyz (404) is taken as ready."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            response = await client.get("/readyz")
            if response.status_code in (200, 404):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            raise click.ClickException(f"the mesh at {client.base_url} was not ready within {timeout:.0f} s")
        if not said:
            console.print("waiting for the mesh to be ready (/readyz) ...")
            said = True
        await asyncio.sleep(1.0)


async def evaluate(
    conversations: list[dict[str, Any]],
    url: str,
    api_key: str | None,
    model: str,
    max_tokens: int,
    concurrency: int,
    console: Console,
    ready_timeout: float = 300.0,
) -> Report:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    report = Report()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        await wait_ready(client, ready_timeout, console)
        with Progress(console=console, transient=False) as progress:
            task = progress.add_task("evaluating", total=len(conversations))

            async def one(conv: dict[str, Any]) -> None:
                async with gate:
                    report.results.extend(await run_conversation(client, conv, model, max_tokens))
                    progress.advance(task)

            await asyncio.gather(*(one(c) for c in conversations))
    report.results.sort(key=lambda r: (r.category, r.conversation, r.turn))
    return report


def print_report(report: Report, console: Console) -> None:
    title = (
        f"accuracy {report.accuracy:.1%} over {len(report.results)} turns; "
        f"{report.replaced_share:.1%} replaced by the extractive answer"
    )
    table = Table(title=title)
    table.add_column("category")
    table.add_column("passed", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("replaced", justify="right")
    replaced = report.replaced_by_category()
    for category, (passed, total) in report.by_category().items():
        table.add_row(category, f"{passed}/{total}", f"{passed / total:.0%}", f"{replaced[category][0]}")
    for lang, (passed, total) in report.by_language().items():
        table.add_row(f"[lang {lang}]", f"{passed}/{total}", f"{passed / total:.0%}", "")
    console.print(table)


@click.command("eval")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--url",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The mesh's front door (Envoy) or a gateway.",
)
@click.option(
    "--api-key", envvar="CLAWDBOT_API_KEY", default=None, help="Bearer key, when the gateway asks for one."
)
@click.option("--model", default="shop-assistant", show_default=True)
@click.option("--max-tokens", default=200, show_default=True)
@click.option("--concurrency", default=4, show_default=True)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON report here.",
)
@click.option(
    "--min-accuracy", type=float, default=None, help="Exit 1 when the accuracy is below this (for CI)."
)
@click.option(
    "--ready-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for the mesh's /readyz before the first conversation.",
)
def eval_command(
    file: Path,
    url: str,
    api_key: str | None,
    model: str,
    max_tokens: int,
    concurrency: int,
    report_path: Path | None,
    min_accuracy: float | None,
    ready_timeout: float,
) -> None:
    """Run the conversations in FILE through the mesh and print accuracy per category."""
    console = Console(stderr=True)
    conversations = [
        json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    report = asyncio.run(
        evaluate(conversations, url, api_key, model, max_tokens, concurrency, console, ready_timeout)
    )
    print_report(report, console)
    if report_path is not None:
        report_path.write_text(
            json.dumps(report.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
    click.echo(json.dumps({"accuracy": round(report.accuracy, 4), "turns": len(report.results)}))
    if min_accuracy is not None and report.accuracy < min_accuracy:
        raise SystemExit(1)
