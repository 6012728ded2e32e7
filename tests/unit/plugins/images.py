"""Images the tests make: a QR code, a photo-like scene, text rendered with a CJK font."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import zxingcpp
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CJK_FONT = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"  # fonts-wqy-zenhei (scripts/ensure-system-packages.sh)
)


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    mime = {"PNG": "image/png", "JPEG": "image/jpeg"}[fmt]
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def qr_code(text: str, scale: int = 8) -> Image.Image:
    barcode = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode)
    return Image.fromarray(np.array(barcode.to_image(scale=scale))).convert("RGB")


def photo_like(seed: int = 7) -> Image.Image:
    """A blue sky over green grass with a red blob, blurred and noisy like a phone photo."""
    rng = random.Random(seed)
    image = Image.new("RGB", (480, 320))
    draw = ImageDraw.Draw(image)
    for y in range(200):
        draw.line([(0, y), (480, y)], fill=(60 + y // 4, 120 + y // 4, 230))
    draw.rectangle([0, 200, 480, 320], fill=(50, 160, 60))
    draw.ellipse([300, 150, 420, 260], fill=(210, 30, 35))
    noise = np.array(image, dtype=np.int16) + np.array(
        [[[rng.randint(-12, 12)] * 3] * 480] * 320, dtype=np.int16
    )
    return Image.fromarray(noise.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))


def text_image(lines: list[str], size: int = 40) -> Image.Image:
    font = ImageFont.truetype(CJK_FONT, size)
    image = Image.new("RGB", (40 + size * 16, 30 + len(lines) * (size + 24)), "white")
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((20, 15 + i * (size + 24)), line, fill="black", font=font)
    return image
