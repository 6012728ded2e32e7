"""Redis key layout, page tokens and settings: the parts an operator or the gateway depends on."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis.crc import key_slot

from clawdbot.services.memory.cli import serve
from clawdbot.services.memory.redis_store import index_key, session_keys
from clawdbot.services.memory.settings import MemorySettings
from clawdbot.services.memory.store import SessionKey, decode_page_token, encode_page_token
from clawdbot.shared.errors import InvalidArgument


def test_a_sessions_keys_share_one_cluster_slot_and_name_their_tenant() -> None:
    keys = session_keys(SessionKey("acme", "user:42/chat"))
    assert keys == [
        "clawdbot:{acme:user:42/chat}:meta",
        "clawdbot:{acme:user:42/chat}:msgs",
        "clawdbot:{acme:user:42/chat}:ids",
        "clawdbot:{acme:user:42/chat}:facts",
    ]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert index_key("acme") == "clawdbot:{acme}:sessions"


def test_page_tokens_round_trip_and_foreign_tokens_are_rejected() -> None:
    for session_id in ["s1", "用户-7", "a:b/c=="]:
        assert decode_page_token(encode_page_token(session_id)) == session_id
    assert decode_page_token("") is None
    for bad in ["%%%", "czE", encode_page_token("x")[:-2] + "!!"]:
        with pytest.raises(InvalidArgument):
            decode_page_token(bad)


def test_settings_come_from_the_memory_section_and_clawdbot_memory_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "clawdbot.yaml"
    config.write_text("memory:\n  ttl_seconds: 3600\n  max_messages: 40\n")
    monkeypatch.setenv("CLAWDBOT_MEMORY_REDIS_URL", "redis://cache:6379/2")
    settings = MemorySettings.load(config, max_messages=None, health_interval_s=0.5)
    assert (settings.port, settings.redis_url, settings.ttl_seconds) == (50054, "redis://cache:6379/2", 3600)
    assert (settings.max_messages, settings.health_interval_s) == (40, 0.5)


def test_serve_memory_documents_its_options() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    for option in ["--redis-url", "--ttl", "--max-messages", "--health-interval", "--port", "--config"]:
        assert option in result.output
