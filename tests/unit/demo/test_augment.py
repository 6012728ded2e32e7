"""Typing noise for the training phrasings: deterministic, ids intact, never empty; and the
phrasing tables are well formed."""

from __future__ import annotations

import json
import random
import re
import string

import pytest

from clawdbot.demo import phrasings as ph
from clawdbot.demo.augment import code_switch, noisy, spacing, typo
from clawdbot.demo.shop import DEFAULT_SHOP_DIR

IDS = ["SO20261125001", "SO20269999999", "SO20260000042"]
ID_RE = re.compile(r"(?<![0-9０-９])so\d{11}(?![0-9０-９])", re.IGNORECASE)

TEMPLATE_TABLES = {
    "ORDER_STATUS": ({"order"}, ph.ORDER_STATUS),
    "ORDER_GIVE_NUMBER": ({"order"}, ph.ORDER_GIVE_NUMBER),
    "PRODUCT_PRICE": ({"product"}, ph.PRODUCT_PRICE),
    "PRODUCT_COLOURS": ({"product"}, ph.PRODUCT_COLOURS),
    "PRODUCT_STOCK": ({"product"}, ph.PRODUCT_STOCK),
    "PRODUCT_WARRANTY": ({"product"}, ph.PRODUCT_WARRANTY),
    "PRODUCT_SPECS": ({"product"}, ph.PRODUCT_SPECS),
    "PRODUCT_GENERAL": ({"product"}, ph.PRODUCT_GENERAL),
    "RECOMMEND": ({"category"}, ph.RECOMMEND),
    "RECOMMEND_BUDGET": ({"category", "budget"}, ph.RECOMMEND_BUDGET),
}
PLAIN_TABLES = {
    "ORDER_NO_NUMBER": (40, ph.ORDER_NO_NUMBER),
    "FOLLOWUP_ORDER": (30, ph.FOLLOWUP_ORDER),
    "FOLLOWUP_PRICE": (30, ph.FOLLOWUP_PRICE),
    "FOLLOWUP_STOCK": (30, ph.FOLLOWUP_STOCK),
    "FOLLOWUP_COLOURS": (30, ph.FOLLOWUP_COLOURS),
    "FOLLOWUP_WARRANTY": (30, ph.FOLLOWUP_WARRANTY),
    "GREETING": (40, ph.GREETING),
    "THANKS": (40, ph.THANKS),
    "COMPLAINT": (40, ph.COMPLAINT),
    "OUT_OF_SCOPE": (40, ph.OUT_OF_SCOPE),
    "HANDOFF": (30, ph.HANDOFF),
    "ANGRY": (20, ph.ANGRY),
    "INJECTION": (30, ph.INJECTION),
    "DECLINE_TOPICS": (40, ph.DECLINE_TOPICS),
    "GOODBYE": (15, ph.GOODBYE),
}
MINIMUM = {"ORDER_STATUS": 40, "PRODUCT_PRICE": 40, "PRODUCT_COLOURS": 40, "PRODUCT_STOCK": 40}
MINIMUM |= {"PRODUCT_WARRANTY": 40, "ORDER_GIVE_NUMBER": 30, "PRODUCT_SPECS": 30, "PRODUCT_GENERAL": 30}
MINIMUM |= {"RECOMMEND": 30, "RECOMMEND_BUDGET": 30}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _samples() -> list[tuple[str, str]]:
    """(text, lang) from every table, formatted, with a range of ids."""
    rng = random.Random(0)
    out = []
    for _, table in TEMPLATE_TABLES.values():
        for lang in ("zh", "en"):
            for template in table[lang]:
                text = template.format(
                    order=rng.choice(IDS), product="mate 60", category="耳机", budget=rng.choice([500, 2000])
                )
                out.append((text, lang))
    for _, table in PLAIN_TABLES.values():
        out += [(text, lang) for lang in ("zh", "en") for text in table[lang]]
    return out


# --- the phrasing tables --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEMPLATE_TABLES))
def test_template_tables_use_only_their_placeholders(name: str) -> None:
    fields, table = TEMPLATE_TABLES[name]
    for lang in ("zh", "en"):
        assert len(table[lang]) >= MINIMUM[name], (name, lang)
        assert len(set(table[lang])) == len(table[lang]), (name, lang, "duplicates")
        for template in table[lang]:
            used = _fields(template)
            assert used <= fields and used, (name, template)
            template.format(order="SO20261125001", product="x", category="y", budget=1)


@pytest.mark.parametrize("name", sorted(PLAIN_TABLES))
def test_plain_tables_are_big_enough_and_have_no_braces(name: str) -> None:
    minimum, table = PLAIN_TABLES[name]
    for lang in ("zh", "en"):
        assert len(table[lang]) >= minimum, (name, lang)
        assert len(set(table[lang])) == len(table[lang]), (name, lang, "duplicates")
        assert all(t.strip() and "{" not in t and "}" not in t for t in table[lang]), name


def test_faq_paraphrases_cover_every_faq_and_are_not_copies() -> None:
    faqs = [json.loads(line) for line in (DEFAULT_SHOP_DIR / "faq.jsonl").read_text().splitlines() if line]
    assert set(ph.FAQ_PARAPHRASES) == {f["id"] for f in faqs}
    for faq in faqs:
        for lang in ("zh", "en"):
            paraphrases = ph.FAQ_PARAPHRASES[faq["id"]][lang]
            assert len(set(paraphrases)) >= 8, (faq["id"], lang)
            question = faq[lang]["q"].lower().strip("?？ ")
            assert all(p.lower().strip("?？ ") != question for p in paraphrases), faq["id"]


def test_categories_and_nicknames_match_the_catalogue() -> None:
    catalogue = json.loads((DEFAULT_SHOP_DIR / "catalogue.json").read_text())
    assert set(ph.CATEGORY_NAMES) == {c["id"] for c in catalogue["categories"]}
    assert set(ph.PRODUCT_NICKNAMES) == {p["id"] for p in catalogue["products"]}
    for names in [*ph.CATEGORY_NAMES.values(), *ph.PRODUCT_NICKNAMES.values()]:
        assert len(names["zh"]) >= 3 and len(names["en"]) >= 3
    for product in catalogue["products"]:
        aliases = {a.lower() for a in [*product["aliases"], product["name_zh"], product["name_en"]]}
        nicknames = ph.PRODUCT_NICKNAMES[product["id"]]
        assert not aliases & {n.lower() for n in nicknames["zh"] + nicknames["en"]}, product["id"]


def test_every_table_has_both_languages_and_faq_prefixes_grew() -> None:
    assert len(ph.FAQ_PREFIXES["zh"]) >= 40 and len(ph.FAQ_PREFIXES["en"]) >= 40


# --- augmentation ---------------------------------------------------------------------------


def test_deterministic_for_a_seed() -> None:
    samples = _samples()

    def run(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [
            f(text, lang, rng)
            for text, lang in samples
            for f in (
                lambda t, lang, r: typo(t, r),
                code_switch,
                lambda t, lang, r: spacing(t, r),
                noisy,
            )
        ]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_order_ids_survive_every_function() -> None:
    rng = random.Random(1)
    for text, lang in _samples() * 3:
        ids = [m.upper() for m in ID_RE.findall(text)]
        for out in (
            typo(text, rng),
            code_switch(text, lang, rng),
            spacing(text, rng),
            noisy(text, lang, rng),
            noisy(text, lang, rng, p=1.0),
        ):
            assert [m.upper() for m in ID_RE.findall(out)] == ids, (text, out)
            for order_id in ids:
                assert order_id in out or order_id.lower() in out, (text, out)


def test_placeholders_survive_so_templates_can_be_noised_before_formatting() -> None:
    rng = random.Random(2)
    for _, table in TEMPLATE_TABLES.values():
        for lang in ("zh", "en"):
            for template in table[lang]:
                for _ in range(3):
                    out = noisy(template, lang, rng, p=1.0)
                    assert _fields(out) == _fields(template), (template, out)
                    formatted = out.format(order=IDS[0], product="x", category="y", budget=9)
                    if "order" in _fields(template):
                        assert IDS[0] in formatted


def test_output_differs_in_a_good_share_and_is_never_empty() -> None:
    rng = random.Random(3)
    samples = _samples()
    changed = {"typo": 0, "spacing": 0, "noisy": 0, "noisy_all": 0}
    for text, lang in samples:
        outs = {
            "typo": typo(text, rng),
            "spacing": spacing(text, rng),
            "noisy": noisy(text, lang, rng),
            "noisy_all": noisy(text, lang, rng, p=1.0),
        }
        for key, out in outs.items():
            assert out.strip(), (key, text)
            changed[key] += out != text
    n = len(samples)
    assert changed["typo"] / n > 0.6, changed
    assert changed["spacing"] / n > 0.6, changed
    assert changed["noisy"] / n > 0.4, changed
    assert changed["noisy_all"] / n > 0.85, changed


def test_never_empty_on_tiny_inputs() -> None:
    rng = random.Random(4)
    for text in ["吗", "嘛", "?", "人工", "88", "hi", "u", "{order}", "SO20261125001", "！", "了吧"]:
        for _ in range(50):
            for lang in ("zh", "en"):
                assert noisy(text, lang, rng, p=1.0).strip()
            assert typo(text, rng).strip() and spacing(text, rng).strip()


def test_code_switch_swaps_words_between_languages() -> None:
    rng = random.Random(5)
    zh = [code_switch("我的订单到哪了", "zh", rng) for _ in range(20)]
    assert all("order" in t for t in zh)
    en = [code_switch("where is my order", "en", rng) for _ in range(20)]
    assert all("订单" in t for t in en)
    assert code_switch("在吗", "zh", rng) == "在吗"


def test_chinese_typos_use_homophones_and_full_width_digits_appear() -> None:
    rng = random.Random(6)
    outs = {typo("有货吗", rng) for _ in range(60)}
    assert {"有或吗", "有货嘛"} & outs
    digits = [spacing("小米14多少钱，订单SO20261125001", rng) for _ in range(60)]
    assert any("１４" in d for d in digits)
    assert all("SO20261125001" in d for d in digits)


def test_keep_protects_other_strings_such_as_product_names() -> None:
    rng = random.Random(7)
    for text, lang, name in [
        ("xiaomi 14 how much is it? order SO20261125001", "en", "xiaomi 14"),
        ("小米14多少钱呀，订单SO20261125001发货了吗", "zh", "小米14"),
        ("how much is the mate 60 pro", "en", "mate 60 pro"),
    ]:
        for _ in range(200):
            out = noisy(text, lang, rng, p=1.0, keep=[name])
            assert name in out.lower(), out
            if "SO20261125001" in text:
                assert "SO20261125001" in out or "so20261125001" in out
