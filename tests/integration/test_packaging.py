"""`pip install .` gives one `clawdbot` namespace, generated stubs, bundled assets and a working CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import grpc
import pytest

from clawdbot.shared.processes import free_port, wait_serving
from clawdbot.v1 import tokenizer_pb2, tokenizer_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("clawdbot-*.whl")
    return built


def test_wheel_holds_one_namespace_with_stubs_and_assets(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"clawdbot"}
    for required in (
        "clawdbot/v1/tokenizer_pb2.py",
        "clawdbot/v1/tokenizer_pb2.pyi",
        "clawdbot/v1/chat_pb2_grpc.py",
        "clawdbot/services/tokenizer/server.py",
        "clawdbot/shared/grpc_server.py",
        "clawdbot/models/shop-assistant/tokenizer.json",
        "clawdbot/models/shop-assistant/chat_template.jinja",
        "clawdbot/models/shop-assistant/model-00001-of-00002.safetensors",
        "clawdbot/models/shop-assistant-int4/model.safetensors",
        "clawdbot/examples/shop/plugins.yaml",
        "clawdbot/examples/shop/orders.json",
    ):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "clawdbot = clawdbot.shared.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_serves_the_tokenizer(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv with only the wheel; its dependencies come from this venv's site-packages via a .pth
    line (which does not run this venv's editable-install hook), so the installed copy is what runs."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "deps-from-dev-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    where = subprocess.run(
        [py, "-c", "import clawdbot.shared.cli as c; print(c.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout
    assert where.startswith(str(env_dir)), where
    help_text = subprocess.run(
        [env_dir / "bin" / "clawdbot", "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "serve" in help_text and "up" in help_text

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen(
        [env_dir / "bin" / "clawdbot", "serve", "tokenizer", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def call() -> list[int]:
            await wait_serving(f"127.0.0.1:{port}", 60, process=proc)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = tokenizer_pb2_grpc.TokenizerStub(channel)
                reply = await stub.Encode(tokenizer_pb2.EncodeRequest(texts=["你好"]), timeout=10)
                return list(reply.encodings[0].ids)

        assert asyncio.run(call())
    finally:
        proc.terminate()
        proc.wait(15)
