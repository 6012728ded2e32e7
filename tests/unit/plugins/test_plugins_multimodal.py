"""multimodal: QR codes, photo-like images and OCR in Chinese and English; bad images are rejected."""

from __future__ import annotations

import base64

import pytest

from clawdbot.services.plugins.base import PluginContext
from clawdbot.services.plugins.builtin.multimodal import ImageAnalyzer, ImageSettings
from clawdbot.services.plugins.types import ImageInput
from clawdbot.shared.errors import InvalidArgument

from .conftest import SHOP, user_turn
from .images import data_url, photo_like, qr_code, text_image


@pytest.fixture(scope="module")
def analyzer() -> ImageAnalyzer:
    return ImageAnalyzer(
        "images", ImageSettings(max_bytes=2_000_000, max_pixels=4_000_000), PluginContext(SHOP)
    )


async def test_setup_finds_the_chinese_and_english_ocr_data(analyzer: ImageAnalyzer) -> None:
    await analyzer.setup()


async def test_qr_code_is_read_and_added_to_the_message(analyzer: ImageAnalyzer) -> None:
    result = await analyzer.preprocess(
        user_turn("这个订单怎么样了", images=[data_url(qr_code("SO20261125001"))])
    )
    assert "[image 1 QR Code: SO20261125001]" in result.text
    assert "QR Code code: SO20261125001" in result.context[0].text
    assert result.context[0].source == "image:0"


async def test_photo_like_image_gets_size_format_and_dominant_colours(analyzer: ImageAnalyzer) -> None:
    report = await analyzer.describe(ImageInput(data_url(photo_like(), "JPEG"), 0))
    assert (report.format, report.width, report.height) == ("JPEG", 480, 320)
    names = [name for name, _ in report.colours]
    assert any("blue" in n for n in names) and any("green" in n for n in names)
    assert report.codes == []


async def test_chinese_and_english_text_is_read_by_ocr(analyzer: ImageAnalyzer) -> None:
    image = text_image(["屏幕碎了，申请保修", "Screen cracked, need repair"])
    report = await analyzer.describe(ImageInput(data_url(image), 0))
    compact = report.text.replace(" ", "")
    assert "屏幕碎了" in compact and "保修" in compact
    assert "Screen cracked" in report.text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/cat.png", "not a data: URL"),
        ("data:image/png,rawbytes", "without ;base64"),
        ("data:image/png;base64,@@@not-base64@@@", "malformed base64"),
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "is not an image"),
        (
            "data:image/png;base64," + base64.b64encode(b"GIF89a but not really an image").decode(),
            "cannot decode",
        ),
        (
            "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(),
            "cannot decode",
        ),
    ],
)
async def test_malformed_images_are_invalid_arguments(
    analyzer: ImageAnalyzer, url: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        await analyzer.describe(ImageInput(url, 0))
    assert caught.value.field is not None and "image_url" in caught.value.field


async def test_oversized_images_are_invalid_arguments(analyzer: ImageAnalyzer) -> None:
    from PIL import Image

    too_many_pixels = Image.new("RGB", (2100, 2000), "white")  # 4.2 MP > 4 MP, tiny as PNG
    with pytest.raises(InvalidArgument, match="pixels"):
        await analyzer.describe(ImageInput(data_url(too_many_pixels), 0))
    too_many_bytes = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + b"x" * 2_100_000).decode()
    with pytest.raises(InvalidArgument, match="larger than"):
        await analyzer.describe(ImageInput(too_many_bytes, 0))
