"""plugins.yaml: the shop file loads; every mistake names the file, the plugin and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from clawdbot.services.plugins.cli import plugins as plugins_cli
from clawdbot.services.plugins.config import PluginConfigError
from clawdbot.services.plugins.kinds import KINDS
from clawdbot.services.plugins.loader import load_plugin_set

from .conftest import SHOP


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shop_file_configures_all_twelve_kinds() -> None:
    plugin_set = load_plugin_set(SHOP / "plugins.yaml")
    assert sorted({p.kind for p in plugin_set.plugins}) == sorted(KINDS)
    orders = [p.entry.order for p in plugin_set.plugins]
    assert orders == sorted(orders)


def test_unknown_config_key_names_file_plugin_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plugins:\n  - name: faq\n    kind: retrieval\n    config:\n      sources: [{path: x.jsonl, format: faq}]\n      top_kk: 3\n",
    )
    with pytest.raises(PluginConfigError) as caught:
        load_plugin_set(path)
    message = str(caught.value)
    assert str(path) in message and "plugin 'faq'" in message and "key 'config.top_kk'" in message


def test_nested_config_error_names_the_nested_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plugins:\n  - name: lang\n    kind: language\n    config:\n      templates: {en: {locale: en-US}}\n",
    )
    with pytest.raises(PluginConfigError, match=r"plugin 'lang': key 'config\.templates\.en\.instruction'"):
        load_plugin_set(path)


@pytest.mark.parametrize(
    ("body", "plugin", "key"),
    [
        ("  - name: x\n    kind: telepathy\n", "x", "kind"),
        ("  - name: x\n    kind: pii\n    timeout_ms: -1\n", "x", "timeout_ms"),
        ("  - name: x\n    kind: pii\n    on_error: retry\n", "x", "on_error"),
        ("  - name: x\n    kind: pii\n    colour: red\n", "x", "colour"),
        ("  - name: x\n    kind: pii\n    use: no.such.module:Thing\n", "x", "use"),
        ("  - name: x\n    kind: pii\n    use: no-such-entry-point\n", "x", "use"),
        (
            "  - name: x\n    kind: pii\n    use: clawdbot.services.plugins.builtin.entity:PatternSlots\n",
            "x",
            "use",
        ),
        ("  - name: x\n    kind: pii\n  - name: x\n    kind: entity\n", "x", "name"),
        ("  - name: kg\n    kind: knowledge_graph\n    config: {file: missing.csv}\n", "kg", "config"),
    ],
)
def test_structural_errors_name_the_plugin_and_key(tmp_path: Path, body: str, plugin: str, key: str) -> None:
    path = write(tmp_path, "plugins:\n" + body)
    with pytest.raises(PluginConfigError) as caught:
        load_plugin_set(path)
    assert caught.value.file == str(path)
    assert caught.value.plugin == plugin
    assert caught.value.key == key


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins:\n  - name: [unclosed\n")
    with pytest.raises(PluginConfigError, match="not valid YAML"):
        load_plugin_set(path)


def test_cli_check_reports_ok_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(plugins_cli, ["check", str(SHOP / "plugins.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "OK (12 plugins)" in ok.output
    bad = write(tmp_path, "plugins:\n  - name: pii\n    kind: pii\n    config: {style: stars}\n")
    failed = runner.invoke(plugins_cli, ["check", str(bad)])
    assert failed.exit_code == 1
    assert "plugin 'pii'" in failed.output and "key 'config.style'" in failed.output


def test_cli_list_shows_plugins_and_sources() -> None:
    result = CliRunner().invoke(plugins_cli, ["list", str(SHOP / "plugins.yaml")])
    assert result.exit_code == 0, result.output
    for name in ("language", "privacy", "shop_tools", "reply_filter"):
        assert name in result.output
