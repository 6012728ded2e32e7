"""The bundled demo model through the whole mesh (`clawdbot up`'s Mesh, Envoy in front, the example
shop's plugins): the project's eval set scores above the bar docs/demo-model.md records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from clawdbot.demo import EVAL_BAR, EVAL_ORDER_STATUS_BAR, EVAL_SET
from clawdbot.gateway.eval_cli import evaluate
from clawdbot.gateway.up import Mesh, MeshOptions
from clawdbot.shared.processes import free_port

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A fresh mesh (the response cache learns, so scores are only comparable on a fresh one)."""
    options = MeshOptions(
        http_port=free_port(),
        grpc_port=free_port(),
        quantization="int4",
        device="cpu",
        log_dir=tmp_path_factory.mktemp("demo-mesh-logs"),
        ready_timeout=240,
    )
    mesh = Mesh(options)
    mesh.start()
    try:
        asyncio.run(mesh.wait_ready())
    except BaseException:
        mesh.stop()
        raise
    yield mesh
    mesh.stop()


def test_eval_set_scores_above_the_bar(demo_mesh: Mesh, tmp_path: Path) -> None:
    conversations = [
        json.loads(line) for line in EVAL_SET.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    url = f"http://127.0.0.1:{demo_mesh.options.http_port}"
    quiet = Console(quiet=True)
    report = asyncio.run(evaluate(conversations, url, None, "shop-assistant", 200, 2, quiet))
    (tmp_path / "report.json").write_text(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
    assert not [r for r in report.results if r.error], [r.error for r in report.results if r.error][:3]
    passed, total = report.by_category()["order_status"]
    assert passed / total >= EVAL_ORDER_STATUS_BAR, report.to_json()["by_category"]
    assert report.accuracy >= EVAL_BAR, report.to_json()["by_category"]
