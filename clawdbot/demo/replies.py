"""The assistant's side: replies built from the shop's data, the way a good agent answers."""

from __future__ import annotations

from clawdbot.demo.shop import Faq, Order, Product
from clawdbot.services.plugins.builtin.orders import not_found_answer, order_answer


def order_reply(order: Order, lang: str) -> str:
    """The shop's own order answer (the lookup tool renders the same one for the fallback)."""
    return order_answer(
        {
            "order_id": order.order_id,
            "status": order.status,
            "status_zh": order.status_zh,
            "status_en": order.status_en,
            "note_zh": order.note_zh,
            "note_en": order.note_en,
            "carrier": order.carrier,
            "tracking_no": order.tracking_no,
            "estimated_delivery": order.estimated_delivery,
        },
        lang,
    )


def order_not_found_reply(order_id: str, lang: str) -> str:
    return not_found_answer(order_id, lang)


def ask_order_number(lang: str) -> str:
    if lang == "zh":
        return "请提供您的订单号（以SO开头，共13位），我马上帮您查询。"
    return (
        "Please send me your order number (it starts with SO, 13 characters) and I'll look it up right away."
    )


def price_reply(p: Product, lang: str) -> str:
    if lang == "zh":
        return f"{p.name_zh}售价{p.price_cny}元。"
    return f"The {p.name_en} costs {p.price_cny} CNY."


def colours_reply(p: Product, lang: str) -> str:
    if lang == "zh":
        return (
            f"{p.name_zh}有{'、'.join(c[0] for c in p.colours)}可选。"
            if p.colours
            else f"{p.name_zh}只有一种颜色。"
        )
    return (
        f"The {p.name_en} comes in {', '.join(c[1] for c in p.colours)}."
        if p.colours
        else f"The {p.name_en} comes in one colour."
    )


def stock_reply(p: Product, lang: str) -> str:
    if lang == "zh":
        return f"{p.name_zh}目前有货，库存{p.stock}件。" if p.stock > 0 else f"抱歉，{p.name_zh}暂时缺货。"
    return (
        f"Yes, the {p.name_en} is in stock ({p.stock} left)."
        if p.stock > 0
        else f"Sorry, the {p.name_en} is out of stock."
    )


def warranty_reply(p: Product, lang: str) -> str:
    if lang == "zh":
        return f"{p.name_zh}保修{p.warranty_months}个月，签收{p.return_days}天内支持无理由退货。"
    return f"The {p.name_en} has a {p.warranty_months}-month warranty and can be returned within {p.return_days} days of delivery."


def faq_reply(f: Faq, lang: str) -> str:
    return f.a_zh if lang == "zh" else f.a_en


GREETING_REPLY = {
    "zh": "您好，欢迎光临小爪商城！请问有什么可以帮您？",
    "en": "Hello, welcome to ClawShop! How can I help you today?",
}
THANKS_REPLY = {
    "zh": "不客气，祝您购物愉快！还有其他问题随时找我。",
    "en": "You're welcome! Happy shopping, and message me any time.",
}
COMPLAINT_REPLY = {
    "zh": "非常抱歉给您带来不好的体验。请告诉我订单号和具体问题，我会尽快为您处理；如需人工客服，也可以随时说“转人工”。",
    "en": "I'm very sorry about this experience. Please tell me your order number and what went wrong and I'll sort it out; "
    'say "human agent" any time to talk to a person.',
}
GOODBYE_REPLY = {
    "zh": "再见，祝您生活愉快！有需要随时来找我。",
    "en": "Goodbye, have a great day! Message me any time you need help.",
}
OUT_OF_SCOPE_REPLY = {
    "zh": "抱歉，这个问题超出了我的服务范围。我可以帮您查询订单和物流、办理退换货，或者介绍商品。",
    "en": "Sorry, that's outside what I can help with. I can check orders and deliveries, handle returns, or tell you about our products.",
}
