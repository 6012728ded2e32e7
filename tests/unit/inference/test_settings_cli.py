"""Settings come from YAML and CLAWDBOT_INFERENCE_* like every service; the CLI exposes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

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
    ):
        assert option in result.output
