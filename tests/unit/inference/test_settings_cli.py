"""Settings come from YAML and CLAWDBOT_INFERENCE_* like every service; the CLI exposes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from clawdbot.services.inference.cli import serve
from clawdbot.services.inference.settings import InferenceSettings
from clawdbot.shared.config import ConfigError


def test_yaml_section_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "clawdbot.yaml"
    config.write_text("inference:\n  quantization: int4\n  max_num_seqs: 4\n  block_size: 32\n")
    monkeypatch.setenv("CLAWDBOT_INFERENCE_MAX_NUM_SEQS", "8")
    settings = InferenceSettings.load(config, port=6000)
    assert isinstance(settings, InferenceSettings)
    assert settings.quantization == "int4" and settings.block_size == 32
    assert settings.max_num_seqs == 8  # the environment beats the file
    assert settings.port == 6000  # the command line beats both


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "clawdbot.yaml"
    config.write_text("inference:\n  max_num_sequences: 4\n")
    with pytest.raises(ConfigError, match="max_num_sequences"):
        InferenceSettings.load(config)


def test_serve_help_lists_the_engine_options() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--model",
        "--quantization",
        "--device",
        "--dtype",
        "--lm-head",
        "--max-num-batched-tokens",
        "--decode-steps",
        "--decode-chain-quiet-ms",
    ):
        assert option in result.output


def test_decode_chaining_settings_reach_the_scheduler_and_are_bounded(tmp_path: Path) -> None:
    """`decode_steps` 1..16 and the quiet window in ms become the scheduler's chain settings."""
    from clawdbot.services.inference.builder import build_engine
    from clawdbot.services.inference.testing import tiny_model

    tiny_model("mistral", tmp_path, seed=1)
    engine, _ = build_engine(
        InferenceSettings(model=tmp_path, kv_cache_gb=0.01, decode_steps=8, decode_chain_quiet_ms=200)
    )
    assert engine.scheduler.config.decode_steps == 8
    assert engine.scheduler.config.chain_quiet_s == pytest.approx(0.2)
    for bad in ({"decode_steps": 0}, {"decode_steps": 17}, {"decode_chain_quiet_ms": -1}):
        with pytest.raises(ValidationError):
            InferenceSettings(**bad)
