"""entity: slots from the user message (order numbers, phones, product codes, amounts, dates),
normalised and written to the session facts.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable

from pydantic import Field

from clawdbot.services.plugins.base import PluginContext, PluginSettings
from clawdbot.services.plugins.kinds import EntityPlugin, Slot

CN_NUMERALS = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}
_RELATIVE_DAYS = {
    "今天": 0,
    "today": 0,
    "明天": 1,
    "tomorrow": 1,
    "昨天": -1,
    "yesterday": -1,
    "后天": 2,
    "前天": -2,
}


class EntitySettings(PluginSettings):
    order_id_pattern: str = r"SO\d{11}"
    product_code_pattern: str = r"P\d{4}"
    sku_pattern: str | None = r"[A-Z]{2}-[A-Z0-9]+(?:-[A-Z0-9]+)*"
    # What a customer gives as an order number that is not one ("SO2026112500", "订单号是1234567",
    # "my order JD20261125001"): the `order_ref` fact, so the lookup can say it was not found
    # instead of the bot asking again or guessing. Group 1 (or the whole match) is the reference.
    order_ref_pattern: str | None = (
        r"(?<![A-Za-z0-9])(SO\s?\d{5,15})(?!\d)"
        r"|(?:订单号|单号|订单编号|订单|order\s*(?:number|no\.?|#|id)?)\s*(?:是|为|:|：|#|is)?\s*([A-Z]{0,3}\d{5,15})(?![\dA-Za-z])"
    )
    currency: str = "CNY"
    slots: list[str] = Field(
        default_factory=lambda: [
            "order_id",
            "order_ref",
            "phone",
            "product_id",
            "sku",
            "amount",
            "date",
            "email",
        ]
    )
    timezone_offset_hours: float = 8.0  # "today" is the shop's today


def _bounded(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])", re.IGNORECASE)


_PHONE = re.compile(r"(?<!\d)(?:\+?86[-\s]?)?(1[3-9]\d)[-\s]?(\d{4})[-\s]?(\d{4})(?!\d)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_AMOUNT = re.compile(
    r"(?:(?P<sym>[¥￥$])\s?(?P<a>\d+(?:,\d{3})*(?:\.\d{1,2})?))"
    r"|(?:(?P<b>\d+(?:,\d{3})*(?:\.\d{1,2})?)\s?(?P<unit>元|块钱|块|人民币|rmb|cny|yuan|dollars?|usd))",
    re.IGNORECASE,
)
_ISO_DATE = re.compile(r"(?<!\d)(20\d{2})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?!\d)")
_CN_DATE = re.compile(r"(?<![\d年])(\d{1,2})月(\d{1,2})[日号]")
_EN_DATE = re.compile(
    r"\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(20\d{2}))?\b",
    re.IGNORECASE,
)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_RELATIVE = re.compile("|".join(sorted(map(re.escape, _RELATIVE_DAYS), key=len, reverse=True)), re.IGNORECASE)


def _date(year: int, month: int, day: int) -> str | None:
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


class PatternSlots(EntityPlugin[EntitySettings]):
    settings_model = EntitySettings
    description = (
        "Order numbers, phone numbers, product codes, amounts and dates, normalised into session facts."
    )

    def __init__(self, name: str, settings: EntitySettings, context: PluginContext) -> None:
        super().__init__(name, settings, context)
        self.order_id = _bounded(settings.order_id_pattern)
        self.product = _bounded(settings.product_code_pattern)
        self.order_ref = (
            re.compile(settings.order_ref_pattern, re.IGNORECASE) if settings.order_ref_pattern else None
        )
        self.sku = (
            re.compile(rf"(?<![A-Za-z0-9-]){settings.sku_pattern}(?![A-Za-z0-9-])")
            if settings.sku_pattern
            else None
        )
        self.today: Callable[[], dt.date] = lambda: (
            dt.datetime.now(dt.UTC) + dt.timedelta(hours=settings.timezone_offset_hours)
        ).date()

    def _dates(self, text: str) -> list[tuple[int, str, str]]:
        today = self.today()
        found = []
        for m in _ISO_DATE.finditer(text):
            if value := _date(int(m.group(1)), int(m.group(2)), int(m.group(3))):
                found.append((m.start(), value, m.group(0)))
        for m in _CN_DATE.finditer(text):
            if value := _date(today.year, int(m.group(1)), int(m.group(2))):
                found.append((m.start(), value, m.group(0)))
        for m in _EN_DATE.finditer(text):
            year = int(m.group(3)) if m.group(3) else today.year
            if value := _date(year, _MONTHS.index(m.group(1).lower()[:3]) + 1, int(m.group(2))):
                found.append((m.start(), value, m.group(0)))
        for m in _RELATIVE.finditer(text):
            found.append(
                (
                    m.start(),
                    (today + dt.timedelta(days=_RELATIVE_DAYS[m.group(0).lower()])).isoformat(),
                    m.group(0),
                )
            )
        return found

    def extract(self, text: str) -> list[Slot]:
        found: list[tuple[int, Slot]] = []
        wanted = set(self.settings.slots)
        if "order_id" in wanted:  # full-width digits and a stray space still make an order number
            found += [
                (m.start(), Slot("order_id", re.sub(r"\s", "", m.group(0)).upper(), m.group(0)))
                for m in self.order_id.finditer(unicodedata.normalize("NFKC", text))
            ]
        if (
            "order_ref" in wanted
            and self.order_ref is not None
            and not any(s.name == "order_id" for _, s in found)
        ):
            for m in self.order_ref.finditer(unicodedata.normalize("NFKC", text)):
                ref = re.sub(r"\s", "", next((g for g in m.groups() if g), m.group(0))).upper()
                if not _PHONE.fullmatch(ref):
                    found.append((m.start(), Slot("order_ref", ref, m.group(0))))
                    break
        if "phone" in wanted:
            found += [
                (m.start(), Slot("phone", "".join(m.groups()), m.group(0))) for m in _PHONE.finditer(text)
            ]
        if "email" in wanted:
            found += [
                (m.start(), Slot("email", m.group(0).lower(), m.group(0))) for m in _EMAIL.finditer(text)
            ]
        if "product_id" in wanted:
            found += [
                (m.start(), Slot("product_id", m.group(0).upper(), m.group(0)))
                for m in self.product.finditer(text)
            ]
        if "sku" in wanted and self.sku is not None:
            found += [(m.start(), Slot("sku", m.group(0), m.group(0))) for m in self.sku.finditer(text)]
        if "amount" in wanted:
            for m in _AMOUNT.finditer(text):
                number = float((m.group("a") or m.group("b")).replace(",", ""))
                marker = (m.group("sym") or m.group("unit") or "").lower()
                currency = "USD" if marker in ("$", "usd", "dollar", "dollars") else self.settings.currency
                found.append((m.start(), Slot("amount", f"{number:.2f} {currency}", m.group(0))))
        if "date" in wanted:
            found += [(start, Slot("date", value, mention)) for start, value, mention in self._dates(text)]
        found.sort(key=lambda pair: pair[0])
        return [slot for _, slot in found]
