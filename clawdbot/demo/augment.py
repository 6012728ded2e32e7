"""Noise that real typing has: typos, code-switching between Chinese and English, odd spacing.

Every function takes a `random.Random` and is deterministic given its state. Order ids
(`SO` + 11 digits) and `{...}` placeholders are never altered, so the functions work on
templates before `str.format` as well as on formatted text; the only change an id may see is
`typo`'s lowercasing ("SO20261125001" -> "so20261125001"). Each function also takes `keep`,
strings to leave alone as well (matched in any case; lowercasing may still apply), e.g. the
product name in the text so that entity linking still finds it. Nothing ever returns an empty
or blank string for a non-blank input.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

# Order ids (any case: an earlier lowercasing must not expose them) and format placeholders.
_ID = r"(?i:SO\d{11})"
_PLACEHOLDER = r"\{[A-Za-z_][A-Za-z0-9_]*\}"
_PROTECTED = re.compile(f"{_PLACEHOLDER}|{_ID}")
_PLACEHOLDER_RE = re.compile(_PLACEHOLDER)

_CJK = re.compile(r"[\u3400-\u9fff]")
_PUNCT = set(",.!?;:'\"，。！？；：、～~…")
# Particles people leave out when typing fast.
_PARTICLES = "吗呢啊呀吧哈嘛了啦哦的"
# Homophones / near-homophones typed by pinyin input methods.
_HOMOPHONES: dict[str, list[str]] = {
    "货": ["或", "获"],
    "到": ["道"],
    "在": ["再"],
    "再": ["在"],
    "吗": ["嘛", "么"],
    "嘛": ["吗"],
    "发": ["法"],
    "退": ["推"],
    "的": ["得", "地"],
    "哪": ["那"],
    "那": ["哪"],
    "么": ["嘛"],
    "账": ["帐"],
    "保": ["包"],
    "修": ["休"],
    "色": ["涩"],
    "钱": ["前"],
    "快": ["块"],
    "单": ["担"],
}
# Words customers switch language for: zh -> en and en -> zh (longest first when matching).
_ZH_TO_EN: dict[str, list[str]] = {
    "订单": ["order"],
    "快递": ["express", "快递"],
    "退货": ["return"],
    "退款": ["refund"],
    "价格": ["price"],
    "多少钱": ["how much"],
    "颜色": ["color", "colour"],
    "保修": ["warranty"],
    "发货": ["ship"],
    "物流": ["tracking", "logistics"],
    "库存": ["stock"],
    "发票": ["invoice"],
    "优惠券": ["coupon"],
    "折扣": ["discount"],
    "地址": ["address"],
    "运费": ["shipping fee", "shipping"],
    "包邮": ["free shipping"],
    "取消": ["cancel"],
    "付款": ["pay"],
    "谢谢": ["thx", "thanks"],
    "你好": ["hi", "hello"],
    "好的": ["ok", "okay"],
    "续航": ["battery"],
    "参数": ["specs"],
    "推荐": ["recommend"],
    "预算": ["budget"],
    "客服": ["cs", "service"],
    "包裹": ["package", "parcel"],
}
_EN_TO_ZH: dict[str, list[str]] = {
    "order": ["订单"],
    "orders": ["订单"],
    "price": ["价格"],
    "refund": ["退款"],
    "return": ["退货"],
    "how much": ["多少钱"],
    "free shipping": ["包邮"],
    "shipping fee": ["运费"],
    "shipping": ["运费", "发货"],
    "warranty": ["保修"],
    "colour": ["颜色"],
    "colours": ["颜色"],
    "color": ["颜色"],
    "colors": ["颜色"],
    "in stock": ["有货"],
    "stock": ["库存"],
    "thanks": ["谢谢"],
    "thx": ["谢谢"],
    "hi": ["你好"],
    "hello": ["你好"],
    "cancel": ["取消"],
    "invoice": ["发票"],
    "address": ["地址"],
    "delivery": ["快递", "配送"],
    "express": ["快递"],
    "courier": ["快递"],
    "tracking": ["物流"],
    "discount": ["折扣"],
    "coupon": ["优惠券"],
    "battery": ["续航", "电池"],
    "specs": ["参数"],
    "recommend": ["推荐"],
    "budget": ["预算"],
    "package": ["包裹"],
    "parcel": ["包裹"],
}
_ZH_TERMS = re.compile("|".join(sorted(map(re.escape, _ZH_TO_EN), key=len, reverse=True)))
_EN_TERMS = re.compile(
    r"(?<![A-Za-z])(" + "|".join(sorted(map(re.escape, _EN_TO_ZH), key=len, reverse=True)) + r")(?![A-Za-z])",
    re.IGNORECASE,
)
_FULLWIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


def _has_cjk(text: str) -> bool:
    return bool(_CJK.search(text))


def _is_latin_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def _protected_spans(text: str, keep: Sequence[str] = ()) -> list[tuple[int, int]]:
    """(start, end) of the order ids, placeholders and `keep` strings (any case) in `text`, sorted."""
    spans = [(m.start(), m.end()) for m in _PROTECTED.finditer(text)]
    lowered = text.lower()
    for word in keep:
        if word.strip():
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(word.lower()), lowered)]
    return sorted(spans)


def _mask(text: str, keep: Sequence[str] = ()) -> list[bool]:
    """True for each character inside an order id, a placeholder or a `keep` string."""
    mask = [False] * len(text)
    for start, end in _protected_spans(text, keep):
        for i in range(start, end):
            mask[i] = True
    return mask


def _free_spans(text: str, keep: Sequence[str] = ()) -> list[tuple[int, int]]:
    """(start, end) of the stretches of `text` outside ids, placeholders and `keep` strings."""
    mask = _mask(text, keep)
    spans, start = [], None
    for i, protected in enumerate([*mask, True]):
        if not protected and start is None:
            start = i
        elif protected and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _safe(result: str, original: str) -> str:
    return result if result.strip() else original


def _lowercase(text: str) -> str:
    """Lowercase everything but placeholders (ids become "so…", which is allowed)."""
    out, last = [], 0
    for m in _PLACEHOLDER_RE.finditer(text):
        out.append(text[last : m.start()].lower())
        out.append(m.group())
        last = m.end()
    out.append(text[last:].lower())
    return "".join(out)


def _drop_punctuation(text: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
    mask = _mask(text, keep)
    spots = [i for i, c in enumerate(text) if c in _PUNCT and not mask[i]]
    if not spots:
        return text
    drop = set(spots) if rng.random() < 0.5 else {rng.choice(spots)}  # all of it, or one mark
    return "".join(c for i, c in enumerate(text) if i not in drop)


def _typo_en(text: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
    mask = _mask(text, keep)
    letters = [i for i, c in enumerate(text) if c.isascii() and c.isalpha() and not mask[i]]
    ops = ["drop", "double", "swap", "lower", "punct"]
    for op in rng.sample(ops, k=rng.choice([1, 1, 2])):
        if op == "lower":
            text = _lowercase(text)
        elif op == "punct":
            text = _drop_punctuation(text, rng, keep)
        elif letters:
            mask = _mask(text, keep)
            letters = [i for i, c in enumerate(text) if c.isascii() and c.isalpha() and not mask[i]]
            if op == "drop":
                # only inside words of 3+ letters, so "u" or "i" never vanish
                spots = [
                    i
                    for i in letters
                    if (i > 0 and text[i - 1].isalpha()) or (i + 1 < len(text) and text[i + 1].isalpha())
                ]
                spots = [i for i in spots if _word_len(text, i) >= 3]
                if spots:
                    i = rng.choice(spots)
                    text = text[:i] + text[i + 1 :]
            elif op == "double":
                i = rng.choice(letters)
                text = text[:i] + text[i] + text[i:]
            else:  # swap two adjacent letters of a word
                letter_set = set(letters)
                spots = [i for i in letters if i + 1 in letter_set and text[i] != text[i + 1]]
                if spots:
                    i = rng.choice(spots)
                    text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def _word_len(text: str, i: int) -> int:
    start = i
    while start > 0 and text[start - 1].isascii() and text[start - 1].isalpha():
        start -= 1
    end = i
    while end < len(text) and text[end].isascii() and text[end].isalpha():
        end += 1
    return end - start


def _typo_zh(text: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
    ops = ["particle", "homophone", "homophone", "punct"]
    for op in rng.sample(ops, k=rng.choice([1, 1, 2])):
        mask = _mask(text, keep)
        if op == "punct":
            text = _drop_punctuation(text, rng, keep)
        elif op == "particle":
            spots = [i for i, c in enumerate(text) if c in _PARTICLES and not mask[i]]
            if spots:
                i = rng.choice(spots)
                candidate = text[:i] + text[i + 1 :]
                if candidate.strip():
                    text = candidate
        else:
            spots = [i for i, c in enumerate(text) if c in _HOMOPHONES and not mask[i]]
            if spots:
                i = rng.choice(spots)
                text = text[:i] + rng.choice(_HOMOPHONES[text[i]]) + text[i + 1 :]
    return text


def typo(text: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
    """Typing mistakes.

    English: drop, double or swap adjacent letters, lowercase everything, drop punctuation.
    Chinese (any CJK character in `text`): leave out a particle, type a homophone from a small
    table (货/或, 到/道, 在/再, 吗/嘛, 发/法, 退/推, …), drop punctuation. Order ids and
    `{...}` placeholders are untouched (ids may only be lowercased).
    """
    result = _typo_zh(text, rng, keep) if _has_cjk(text) else _typo_en(text, rng, keep)
    return _safe(result, text)


def code_switch(text: str, lang: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
    """Swap one or two words for the other language's (订单 -> order in Chinese text, order -> 订单
    in English text, 退货/return, 价格/price, 快递/express, …); ids and placeholders untouched."""
    terms, table = (_ZH_TERMS, _ZH_TO_EN) if lang == "zh" else (_EN_TERMS, _EN_TO_ZH)
    mask = _mask(text, keep)
    matches = [m for m in terms.finditer(text) if not any(mask[m.start() : m.end()])]
    if not matches:
        return text
    chosen = sorted(rng.sample(matches, k=min(len(matches), rng.choice([1, 1, 2]))), key=lambda m: m.start())
    out, last = [], 0
    for m in chosen:
        word = rng.choice(table[m.group().lower()])
        out.append(text[last : m.start()])
        if lang == "zh" and word.isascii():
            # a space where the English word would run into other Latin letters or digits
            pad = rng.random() < 0.3
            before = "".join(out)[-1:]
            after = text[m.end() : m.end() + 1]
            if pad or _is_latin_alnum(before):
                word = " " + word
            if pad or _is_latin_alnum(after):
                word = word + " "
        out.append(word)
        last = m.end()
    out.append(text[last:])
    return _safe(re.sub(r" {2,}", " ", "".join(out)).strip() or text, text)


def spacing(text: str, rng: random.Random, keep: Sequence[str] = ()) -> str:
    """Spaces removed or added (between words, around Latin runs in Chinese, doubled), and in
    Chinese text sometimes full-width digits (０-９). Never inside ids or placeholders, and no
    space next to an id or placeholder is removed (so an id never runs into other digits)."""
    original = text
    cjk = _has_cjk(text)
    ops = ["remove", "insert", "double"] + (["fullwidth", "fullwidth"] if cjk else [])
    for op in rng.sample(ops, k=rng.choice([1, 1, 2])):
        mask = _mask(text, keep)
        if op == "remove":
            spots = [
                i
                for i, c in enumerate(text)
                if c == " " and 0 < i < len(text) - 1 and not mask[i - 1] and not mask[i + 1]
            ]
            # in Chinese, spaces next to a Chinese character often all go ("这个 order" -> "这个order")
            beside_cjk = [i for i in spots if _has_cjk(text[i - 1]) or _has_cjk(text[i + 1])]
            if spots:
                drop = set(beside_cjk) if beside_cjk and rng.random() < 0.5 else {rng.choice(spots)}
                text = "".join(c for i, c in enumerate(text) if i not in drop)
        elif op == "insert":
            # a gap between two characters, never inside a protected span, a Latin word or a number
            gaps = [
                i
                for i in range(1, len(text))
                if not (mask[i - 1] and mask[i])
                and text[i - 1] != " "
                and text[i] != " "
                and not (_is_latin_alnum(text[i - 1]) and _is_latin_alnum(text[i]))
            ]
            if cjk:  # prefer the border between Chinese and Latin/digits: "小米 14", "这个 order"
                borders = [i for i in gaps if _has_cjk(text[i - 1]) != _has_cjk(text[i])]
                gaps = borders if borders and rng.random() < 0.7 else gaps
            else:  # a space before punctuation, or a word split in two
                gaps = [i for i in gaps if text[i] in _PUNCT] or gaps
            if gaps:
                i = rng.choice(gaps)
                text = text[:i] + " " + text[i:]
        elif op == "double":
            spots = [i for i, c in enumerate(text) if c == " " and not mask[i]]
            if spots:
                i = rng.choice(spots)
                text = text[:i] + " " + text[i:]
            elif rng.random() < 0.5:
                text = text + " "
            else:
                text = " " + text
        elif len(_CJK.findall(text)) >= sum(c.isascii() and c.isalpha() for c in text):
            # full-width digits outside ids and placeholders, in mostly-Chinese text
            out, last = [], 0
            for start, end in _free_spans(text, keep):
                out.append(text[last:start])
                out.append(text[start:end].translate(_FULLWIDTH_DIGITS))
                last = end
            out.append(text[last:])
            text = "".join(out)
    return _safe(text, original)


def noisy(text: str, lang: str, rng: random.Random, p: float = 0.35, keep: Sequence[str] = ()) -> str:
    """Each of code_switch, typo and spacing applied with probability `p` (in that order), so a
    random subset of them; `keep`: strings besides ids and placeholders to leave intact."""
    steps: list[Callable[[str], str]] = [
        lambda t: code_switch(t, lang, rng, keep),
        lambda t: typo(t, rng, keep),
        lambda t: spacing(t, rng, keep),
    ]
    result = text
    for step in steps:
        if rng.random() < p:
            result = step(result)
    return _safe(result, text)
