"""Reply verification: what passes, what is replaced, and what a stream shows before the check is done."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clawdbot.gateway.verify import AnswerPlan, ReplyGuard
from clawdbot.v1 import common_pb2

ORDER_ANSWER = "您的订单SO20261125001当前状态：已发货，运输中。承运商：顺丰速运，运单号：SF1420261123887。"
GROUNDING = (
    'lookup_order({"order_id": "SO20261125001"}) -> {"status_zh": "已发货，运输中", '
    '"tracking_no": "SF1420261123887", "estimated_delivery": "2026-11-26"}\n我的订单SO20261125001到哪了？'
)


def order_plan() -> AnswerPlan:
    block = common_pb2.ContextBlock(
        text=GROUNDING,
        source="tool:lookup_order",
        score=1.0,
        answer=ORDER_ANSWER,
        key_facts=["已发货，运输中", "SF1420261123887"],
    )
    return AnswerPlan.for_turn([block], {"language": "zh", "template.fallback": "抱歉。"}, GROUNDING)


def stream(guard: ReplyGuard, pieces: list[str]) -> tuple[str, str, str]:
    shown = "".join(guard.feed(p) for p in pieces)
    rest, final, reason = guard.finish()
    return shown + rest, final, reason


def test_a_right_reply_streams_once_its_key_facts_are_in() -> None:
    guard = ReplyGuard(order_plan())
    assert guard.feed("您的订单SO20261125001当前状态：") == ""  # nothing yet: the facts are still to come
    assert guard.feed("已发货，运输中。运单号：SF1420261123887。预计") != ""
    shown, final, reason = stream(guard, ["2026-11-26送达。"])
    assert reason == "" and final.endswith("2026-11-26送达。") and shown.startswith("已发货") is False


def test_a_truncated_tracking_number_is_replaced_by_the_lookup_answer() -> None:
    reply = "您的订单SO20261125001当前状态：已发货，运输中。运单号：SF142026112388。"
    shown, final, reason = stream(
        ReplyGuard(order_plan()), [reply[i : i + 3] for i in range(0, len(reply), 3)]
    )
    assert reason and final == ORDER_ANSWER and shown == ORDER_ANSWER


def test_an_invented_number_after_the_facts_ends_the_reply_before_it() -> None:
    reply = "您的订单SO20261125001已发货，运输中，运单号SF1420261123887。客服电话：400-123-9999。"
    shown, final, reason = stream(ReplyGuard(order_plan()), list(reply))
    assert reason == "" and "400" not in final and final.endswith("SF1420261123887。")  # a whole clause
    assert shown == final


@given(st.text(alphabet="0123456789abc订单号：。 ", max_size=60))
def test_streamed_text_is_always_the_final_reply(reply: str) -> None:
    guard = ReplyGuard(order_plan())
    shown, final, _ = stream(guard, [reply[i : i + 2] for i in range(0, len(reply), 2)])
    assert shown == final
    assert final == ORDER_ANSWER or set(final.replace("SF1420261123887", "")) & set("0123456789") <= set(
        "".join(sorted(set(c for c in GROUNDING if c.isdigit())))
    )


def test_empty_markup_and_wrong_language_replies_are_replaced() -> None:
    plan = order_plan()
    assert plan.problem("") == "empty"
    assert plan.problem('已发货，运输中 SF1420261123887 "}}</tool_call>') == "markup"
    assert plan.problem("Your order is shipped, in transit, SF1420261123887, arriving soon.") == "language"


def test_without_an_answering_block_the_language_template_is_the_fallback() -> None:
    plan = AnswerPlan.for_turn([], {"language": "en", "template.fallback": "Sorry, outside my scope."}, "hi")
    _, final, reason = stream(ReplyGuard(plan), ["Call 555-0100 now"])
    assert reason.startswith("ungrounded_number") and final == "Sorry, outside my scope."


def test_without_an_answering_block_only_a_decline_or_a_weak_blocks_answer_is_sent() -> None:
    fallback = "抱歉，这个问题超出了我的服务范围。我可以帮您查询订单和物流、办理退换货，或者介绍商品。"
    weak = common_pb2.ContextBlock(
        text="Q/A", source="faq#9", score=0.3, answer="江浙沪及一线城市通常1-2天。"
    )
    plan = AnswerPlan.for_turn([weak], {"language": "zh", "template.fallback": fallback}, "大概哪天能到 1 2")
    # A thanks reply to a question nothing answered is made up: replaced by the decline.
    _, final, reason = stream(ReplyGuard(plan), ["不客气，祝您购物愉快！还有其他问题随时找我。"])
    assert reason == "off_answer" and final == fallback
    _, final, reason = stream(ReplyGuard(plan), [fallback])
    assert reason == "" and final == fallback
    _, final, reason = stream(ReplyGuard(plan), ["江浙沪及一线城市通常1-2天。"])
    assert reason == "" and final == "江浙沪及一线城市通常1-2天。"


def test_a_passage_reply_must_say_what_the_passage_says() -> None:
    answer = "订单满99元包邮，不满99元收取运费10元。"
    block = common_pb2.ContextBlock(text=answer, source="faq.jsonl#faq-007", score=0.8, answer=answer)
    plan = AnswerPlan.for_turn([block], {"language": "zh"}, answer)
    assert plan.problem(answer) == ""
    assert plan.problem(answer + "\n\n价格以下单页面为准。") == ""  # an output filter's note after the reply
    assert plan.problem("您好，欢迎光临小爪商城！请问有什么可以帮您？") == "off_answer"
    weak = common_pb2.ContextBlock(text=answer, source="faq.jsonl#faq-007", score=0.3, answer=answer)
    assert AnswerPlan.for_turn([weak], {"language": "zh"}, answer).answer == ""  # not sure enough to demand
