"""Typed settings for every service, read from one YAML file and `CLAWDBOT_*` environment variables.

Precedence, highest first: values given in code or on the command line, `CLAWDBOT_<SECTION>_<FIELD>`
environment variables, `CLAWDBOT_<FIELD>` for the fields every service shares (telemetry, logs),
the service's section of the YAML file, the file's `common` section, the defaults.
The file is the one named by `CLAWDBOT_CONFIG` (or passed in), so one file configures a whole mesh.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from clawdbot.shared.event_loop import EventLoopKind

CONFIG_ENV = "CLAWDBOT_CONFIG"
COMMON_SECTION = "common"


class ConfigError(ValueError):
    """A settings file or value is wrong; the message names the file and the key."""


def load_yaml_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The parsed YAML file (empty when there is none); a clear error when it is not a mapping."""
    if path is None:
        return {}
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"config file {file} does not exist")
    data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: the top level must be a mapping of sections")
    return data


class _YamlSectionSource(PydanticBaseSettingsSource):
    """Values from one section of the YAML config file."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        unknown = set(self._data) - set(self.settings_cls.model_fields)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {sorted(unknown)} for {self.settings_cls.__name__}; "
                f"known: {sorted(self.settings_cls.model_fields)}"
            )
        return dict(self._data)


class _CommonEnvSource(EnvSettingsSource):
    """`CLAWDBOT_<FIELD>` for the fields every service shares, so one variable sets a whole mesh."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        return {k: v for k, v in values.items() if k in ServiceSettings.shared_fields}


class ServiceSettings(BaseSettings):
    """What every gRPC service has: address, limits, drain, metrics, telemetry and logs."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    section: ClassVar[str] = "service"
    shared_fields: ClassVar[frozenset[str]] = frozenset(
        {"log_level", "log_format", "otel_exporter", "otel_endpoint", "otel_file", "event_loop"}
    )

    host: str = "127.0.0.1"
    port: int = 50050
    metrics_port: int | None = None  # None: no /metrics endpoint for this process
    grace_seconds: float = 10.0  # SIGTERM drains in-flight calls this long, then cancels them
    max_message_bytes: int = 8 * 1024 * 1024
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    otel_exporter: Literal["none", "console", "otlp", "file"] = "none"
    otel_endpoint: str | None = None  # OTLP/gRPC collector, e.g. http://127.0.0.1:4317
    otel_file: Path | None = None  # where the `file` exporter writes one JSON span per line
    event_loop: EventLoopKind = "uvloop"  # `asyncio` for debugging (shared/event_loop.py)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        data = load_yaml_config(os.environ.get(CONFIG_ENV))
        for name in (COMMON_SECTION, cls.section):
            if not isinstance(data.get(name, {}), dict):
                raise ConfigError(f"config section {name!r} must be a mapping")
        common = {k: v for k, v in data.get(COMMON_SECTION, {}).items() if k in cls.model_fields}
        prefix = f"CLAWDBOT_{cls.section.upper()}_"
        return (
            init_settings,
            EnvSettingsSource(settings_cls, env_prefix=prefix, case_sensitive=False),
            _CommonEnvSource(settings_cls, env_prefix="CLAWDBOT_", case_sensitive=False),
            _YamlSectionSource(settings_cls, data.get(cls.section, {})),
            _YamlSectionSource(settings_cls, common),
        )

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Self:
        """Settings from the file (or `CLAWDBOT_CONFIG`), the environment and non-None overrides."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if config_file is not None:
            previous = os.environ.get(CONFIG_ENV)
            os.environ[CONFIG_ENV] = str(config_file)
            try:
                return cls(**given)
            finally:
                if previous is None:
                    os.environ.pop(CONFIG_ENV, None)
                else:
                    os.environ[CONFIG_ENV] = previous
        return cls(**given)


__all__ = ["ConfigError", "InitSettingsSource", "ServiceSettings", "load_yaml_config"]
