"""Small helpers the end-to-end tests share."""

from __future__ import annotations

import base64
import io
import re

import httpx
import openai

from clawdbot.gateway.up import Mesh

from .conftest import API_KEY


def model_name(mesh: Mesh) -> str:
    reply = httpx.get(
        mesh.http_url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )
    reply.raise_for_status()
    return str(reply.json()["data"][0]["id"])


def client(mesh: Mesh, key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.http_url + "/v1", api_key=key, max_retries=0, timeout=180)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def service_metrics(mesh: Mesh, name: str) -> str:
    return httpx.get(f"http://127.0.0.1:{mesh.metrics_ports[name]}/metrics", timeout=10).text


def png_data_url(color: tuple[int, int, int] = (220, 40, 40)) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (160, 120), color)
    ImageDraw.Draw(image).rectangle((40, 30, 120, 90), fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
