"""Settings come from defaults < YAML common < YAML section < CLAWDBOT_<FIELD> < CLAWDBOT_<SECTION>_<FIELD> < code."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError

from clawdbot.shared.config import ConfigError, ServiceSettings


class DemoSettings(ServiceSettings):
    section: ClassVar[str] = "demo"
    port: int = 1234
    model: str = "default-model"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CLAWDBOT_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clawdbot.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env() -> None:
    settings = DemoSettings.load()
    assert (settings.port, settings.model, settings.otel_exporter) == (1234, "default-model", "none")


def test_precedence_from_file_to_env_to_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, "common:\n  log_level: DEBUG\n  port: 1\ndemo:\n  port: 2\n  model: from-file\n")
    assert DemoSettings.load(config).port == 2  # the section beats common
    assert DemoSettings.load(config).log_level == "DEBUG"
    monkeypatch.setenv("CLAWDBOT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("CLAWDBOT_DEMO_MODEL", "from-env")
    settings = DemoSettings.load(config)
    assert (settings.log_level, settings.model) == ("WARNING", "from-env")
    monkeypatch.setenv("CLAWDBOT_DEMO_LOG_LEVEL", "ERROR")
    assert DemoSettings.load(config).log_level == "ERROR"
    assert DemoSettings.load(config, model="from-cli", port=None).model == "from-cli"


def test_common_env_does_not_set_service_specific_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWDBOT_PORT", "9")
    assert DemoSettings.load().port == 1234


def test_config_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWDBOT_CONFIG", str(write(tmp_path, "demo:\n  model: via-env-file\n")))
    assert DemoSettings.load().model == "via-env-file"


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="modle"):
        DemoSettings.load(write(tmp_path, "demo:\n  modle: typo\n"))


def test_wrong_type_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="port"):
        DemoSettings.load(write(tmp_path, "demo:\n  port: not-a-number\n"))


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        DemoSettings.load(tmp_path / "nope.yaml")
