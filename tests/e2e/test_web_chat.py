"""The chat page in a real headless Chromium (Debian's, driven by Playwright): type a message,
see the streamed reply appear, reload, see the history; the Chinese UI; an attached image."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from clawdbot.gateway.up import Mesh

from .conftest import API_KEY
from .helpers import png_data_url

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (scripts/ensure-system-packages.sh installs it)")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, mesh: Mesh) -> Iterator[Page]:
    context = browser.new_context(locale="en-US")
    context.add_init_script(f"localStorage.setItem('clawdbot.apiKey', '{API_KEY}')")
    opened = context.new_page()
    opened.set_default_timeout(180_000)
    opened.goto(mesh.http_url + "/")
    yield opened
    context.close()


def wait_reply(page: Page) -> None:
    """Until the last reply finished streaming or the page showed an error (which fails the test)."""
    page.wait_for_function(
        "document.querySelector('.msg.error') !== null || "
        "[...document.querySelectorAll('.msg.assistant')].pop()?.dataset.done === 'true'",
        timeout=240_000,
    )
    errors = page.locator(".msg.error").all_inner_texts()
    assert not errors, errors


def test_streamed_reply_then_history_after_reload(page: Page) -> None:
    expect(page.locator("#model")).not_to_be_empty()
    page.fill("#input", "Hello, do you sell backpacks?")
    page.click("#send")
    expect(page.locator(".msg.user")).to_have_text("Hello, do you sell backpacks?")
    wait_reply(page)
    reply = page.locator(".msg.assistant").last
    text = reply.locator(".text").inner_text()
    assert text.strip(), "the streamed reply is empty"
    session = page.evaluate("localStorage.getItem('clawdbot.session')")
    page.reload()
    expect(page.locator(".msg")).to_have_count(2)
    expect(page.locator(".msg.user")).to_have_text("Hello, do you sell backpacks?")
    expect(page.locator(".msg.assistant .text")).to_have_text(text)
    assert page.evaluate("localStorage.getItem('clawdbot.session')") == session
    page.click("#new-chat")
    expect(page.locator(".msg")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('clawdbot.session')") != session


def test_chinese_ui_and_image_attachment(page: Page, tmp_path: Path) -> None:
    page.select_option("#lang", "zh")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.locator("#input")).to_have_attribute("placeholder", "输入消息…")
    image = tmp_path / "bag.png"
    import base64

    image.write_bytes(base64.b64decode(png_data_url().split(",", 1)[1]))
    page.set_input_files("#image", str(image))
    expect(page.locator("#attachment")).to_be_visible()
    page.fill("#input", "这个包有红色的吗？")
    page.click("#send")
    expect(page.locator(".msg.user img")).to_have_count(1)
    wait_reply(page)
    reply = page.locator(".msg.assistant").last
    expect(reply.locator(".sources")).to_contain_text("参考来源")
    page.reload()
    expect(page.locator("#send")).to_have_text("发送")  # the language choice survives a reload
    expect(page.locator(".msg.user img")).to_have_count(1)


def test_hand_off_is_shown(page: Page) -> None:
    page.fill("#input", "I want to talk to a human agent, please")
    page.click("#send")
    wait_reply(page)
    reply = page.locator(".msg.assistant").last
    expect(reply.locator("[data-event=handoff]")).to_contain_text("Handed off to a human agent")
    expect(reply.locator(".text")).to_contain_text("human agent")  # the plugin's canned reply
