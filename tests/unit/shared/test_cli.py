"""The command line reads well and starts fast (no heavy imports for --help)."""

from __future__ import annotations

import subprocess
import sys
import time


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clawdbot.shared.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_command_quickly() -> None:
    started = time.perf_counter()
    result = run("--help")
    assert result.returncode == 0, result.stderr
    for command in ("serve", "up", "quantize", "plugins", "eval"):
        assert command in result.stdout
    assert "torch" not in result.stderr
    assert time.perf_counter() - started < 20


def test_serve_help_lists_the_services() -> None:
    result = run("serve", "--help")
    assert result.returncode == 0, result.stderr
    for service in ("tokenizer", "inference", "plugins", "memory", "gateway"):
        assert service in result.stdout


def test_serve_tokenizer_help_shows_its_options() -> None:
    result = run("serve", "tokenizer", "--help")
    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout and "--port" in result.stdout and "--config" in result.stdout
