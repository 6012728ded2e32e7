"""multimodal: what an image in the message shows, as text the model and later plugins can use.

Images arrive as `data:` URLs (the mesh never fetches images). Each is decoded with limits
(bytes, pixels, formats) checked before the pixels are decoded, then described: format and
size, dominant colours, barcodes and QR codes (zxing-cpp) and text (Tesseract OCR, Chinese and
English). A malformed or oversized image is the caller's error: INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from typing import Any

from pydantic import Field

from clawdbot.services.plugins.base import PluginSettings
from clawdbot.services.plugins.kinds import CodeFound, ImageReport, MultimodalPlugin
from clawdbot.services.plugins.types import ImageInput
from clawdbot.shared.errors import InvalidArgument

# Named colours (English / Chinese) that dominant colours snap to; RGB centres.
NAMED_COLOURS: list[tuple[str, tuple[int, int, int]]] = [
    ("black/黑色", (0, 0, 0)),
    ("white/白色", (255, 255, 255)),
    ("grey/灰色", (128, 128, 128)),
    ("silver/银色", (192, 192, 192)),
    ("red/红色", (220, 30, 30)),
    ("dark red/深红色", (128, 0, 0)),
    ("orange/橙色", (255, 140, 0)),
    ("yellow/黄色", (240, 220, 40)),
    ("green/绿色", (40, 170, 60)),
    ("dark green/深绿色", (0, 90, 30)),
    ("cyan/青色", (0, 200, 200)),
    ("blue/蓝色", (30, 80, 220)),
    ("navy/藏青色", (0, 0, 110)),
    ("purple/紫色", (130, 50, 170)),
    ("pink/粉色", (250, 160, 190)),
    ("brown/棕色", (130, 80, 40)),
    ("beige/米色", (225, 205, 160)),
    ("sky blue/天蓝色", (130, 190, 240)),
]
_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,"
)
_BETWEEN_CJK = re.compile(
    r"(?<=[\u3400-\u9fff\u3000-\u303f\uff00-\uffef])\s+(?=[\u3400-\u9fff\u3000-\u303f\uff00-\uffef])"
)


class ImageSettings(PluginSettings):
    max_bytes: int = Field(default=5 * 1024 * 1024, gt=0)  # decoded size of one image
    max_pixels: int = Field(default=25_000_000, gt=0)  # width x height, checked before decoding pixels
    max_images: int = Field(default=4, ge=1)
    formats: list[str] = Field(default_factory=lambda: ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
    colours: int = Field(default=3, ge=0, le=8)
    barcodes: bool = True
    ocr: bool = True
    ocr_languages: str = "chi_sim+eng"
    ocr_timeout_s: float = Field(default=20.0, gt=0)


def decode_data_url(url: str, max_bytes: int, field: str) -> bytes:
    """The bytes of a base64 `data:` URL; InvalidArgument for anything else or anything too big."""
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        kind = "a data: URL without ;base64" if url.startswith("data:") else "not a data: URL"
        raise InvalidArgument(f"images must be base64 data: URLs ({kind})", field=field)
    mime = match.group("mime") or ""
    if mime and not mime.startswith("image/"):
        raise InvalidArgument(f"data: URL of type {mime!r} is not an image", field=field)
    payload = url[match.end() :].strip()
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InvalidArgument(f"image is larger than {max_bytes} bytes", field=field)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument(f"malformed base64 in data: URL: {exc}", field=field) from exc
    if not data:
        raise InvalidArgument("empty image", field=field)
    if len(data) > max_bytes:
        raise InvalidArgument(f"image is larger than {max_bytes} bytes", field=field)
    return data


def open_image(data: bytes, settings: ImageSettings, field: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(f"cannot decode image: {exc}", field=field) from exc
    if image.format not in settings.formats:
        raise InvalidArgument(
            f"image format {image.format} is not accepted ({settings.formats})", field=field
        )
    width, height = image.size
    if width * height > settings.max_pixels:
        raise InvalidArgument(
            f"image has {width}x{height} pixels, more than {settings.max_pixels}", field=field
        )
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(f"cannot decode image: {exc}", field=field) from exc
    return image


def dominant_colours(image: Any, count: int) -> list[tuple[str, float]]:
    """Shares of the named colours nearest to the image's pixels, largest first."""
    if count == 0:
        return []
    small = image.convert("RGB")
    small.thumbnail((64, 64))
    shares: dict[str, int] = {}
    pixels = small.getcolors(64 * 64) or []
    for n, rgb in pixels:
        name = min(
            NAMED_COLOURS, key=lambda named: sum((a - b) ** 2 for a, b in zip(named[1], rgb, strict=True))
        )[0]
        shares[name] = shares.get(name, 0) + n
    total = sum(shares.values()) or 1
    ranked = sorted(shares.items(), key=lambda item: -item[1])
    return [(name, n / total) for name, n in ranked[:count] if n / total >= 0.05]


def read_codes(image: Any) -> list[CodeFound]:
    import zxingcpp

    found = zxingcpp.read_barcodes(image.convert("RGB"))
    return [CodeFound(str(code.format).split(".")[-1], code.text) for code in found if code.valid]


def ocr_text(image: Any, languages: str, timeout: float) -> str:
    import pytesseract
    from PIL import ImageOps

    gray = ImageOps.grayscale(image)
    if min(gray.size) < 300:  # Tesseract reads small glyphs poorly; upscale small images
        factor = 300 / min(gray.size)
        gray = gray.resize((int(gray.width * factor), int(gray.height * factor)))
    try:
        raw = pytesseract.image_to_string(gray, lang=languages, timeout=timeout)
    except RuntimeError as exc:  # pytesseract's timeout
        raise TimeoutError(f"OCR took longer than {timeout}s") from exc
    lines = [_BETWEEN_CJK.sub("", " ".join(line.split())) for line in raw.splitlines()]
    return "\n".join(line for line in lines if len(line) > 1)


class ImageAnalyzer(MultimodalPlugin[ImageSettings]):
    settings_model = ImageSettings
    description = (
        "Describes data: URL images: size, format, dominant colours, barcodes/QR codes and OCR text (zh+en)."
    )

    async def setup(self) -> None:
        if self.settings.ocr:
            import pytesseract

            available = set(await asyncio.to_thread(pytesseract.get_languages))
            missing = [lang for lang in self.settings.ocr_languages.split("+") if lang not in available]
            if missing:
                raise ValueError(f"Tesseract lacks the OCR language data {missing} (install tesseract-ocr-*)")

    def _describe(self, image_input: ImageInput) -> ImageReport:
        field = f"messages[-1].parts[image {image_input.index}].image_url.url"
        data = decode_data_url(image_input.url, self.settings.max_bytes, field)
        image = open_image(data, self.settings, field)
        codes = read_codes(image) if self.settings.barcodes else []
        text = (
            ocr_text(image, self.settings.ocr_languages, self.settings.ocr_timeout_s)
            if self.settings.ocr
            else ""
        )
        code_texts = {code.text for code in codes}
        text = "\n".join(line for line in text.splitlines() if line not in code_texts)
        return ImageReport(
            index=image_input.index,
            format=str(image.format),
            width=image.width,
            height=image.height,
            colours=dominant_colours(image, self.settings.colours),
            codes=codes,
            text=text,
        )

    async def describe(self, image: ImageInput) -> ImageReport:
        if image.index >= self.settings.max_images:
            raise InvalidArgument(
                f"at most {self.settings.max_images} images per message", field="messages[-1].parts"
            )
        return await asyncio.to_thread(self._describe, image)
