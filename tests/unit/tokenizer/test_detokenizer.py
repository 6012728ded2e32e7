"""Streaming detokenization: no broken characters, and the deltas add up to transformers' decode."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawdbot.services.tokenizer.tokenizer import TextTokenizer

from .conftest import SAMPLE_TEXT

FIXTURE_OK = [HealthCheck.function_scoped_fixture]


def stream(tok: TextTokenizer, ids: list[int], cuts: list[int], *, skip: bool = False) -> list[str]:
    detok = tok.detokenizer(skip_special_tokens=skip)
    deltas: list[str] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(ids)]:
        if start < cut <= len(ids):
            deltas.append(detok.add(ids[start:cut]))
            start = cut
    deltas.append(detok.flush())
    assert detok.ids_consumed == len(ids)
    return deltas


@pytest.mark.parametrize("text", SAMPLE_TEXT)
@pytest.mark.parametrize("which", ["bundled", "sentencepiece"])
def test_one_id_at_a_time_never_breaks_a_character(
    request: pytest.FixtureRequest, which: str, text: str
) -> None:
    tok: TextTokenizer = request.getfixturevalue(which)
    (ids,) = tok.encode([text])
    deltas = stream(tok, ids, list(range(1, len(ids))))
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == tok.hf.decode(ids)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), skip=st.booleans())
def test_random_ids_in_random_chunks_equal_transformers_decode(
    bundled: TextTokenizer, data: st.DataObject, skip: bool
) -> None:
    ids = data.draw(st.lists(st.integers(0, bundled.vocab_size - 1), max_size=60))
    cuts = data.draw(st.lists(st.integers(0, len(ids)), max_size=10))
    assert "".join(stream(bundled, ids, cuts, skip=skip)) == bundled.hf.decode(ids, skip_special_tokens=skip)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data())
def test_sentencepiece_random_ids_equal_transformers_decode(
    sentencepiece: TextTokenizer, data: st.DataObject
) -> None:
    ids = data.draw(st.lists(st.integers(0, sentencepiece.vocab_size - 1), max_size=40))
    cuts = data.draw(st.lists(st.integers(0, len(ids)), max_size=8))
    assert "".join(stream(sentencepiece, ids, cuts)) == sentencepiece.hf.decode(ids)


@settings(max_examples=100, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("订单退款发货你好世界🎉👍🏽é ab1，。!")), min_size=1, max_size=40
    ),
    data=st.data(),
)
def test_text_streams_back_exactly_without_replacement_characters(
    bundled: TextTokenizer, text: str, data: st.DataObject
) -> None:
    (ids,) = bundled.encode([text])
    cuts = data.draw(st.lists(st.integers(0, len(ids)), max_size=10))
    deltas = stream(bundled, ids, cuts)
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_prefix_ids_give_sentencepiece_its_leading_space(sentencepiece: TextTokenizer) -> None:
    (prompt,) = sentencepiece.encode(["the quick"])
    (reply,) = sentencepiece.encode([" brown fox"])
    detok = sentencepiece.detokenizer(prefix_ids=prompt)
    text = "".join(detok.add([i]) for i in reply) + detok.flush()
    assert text.startswith(" ")
    assert sentencepiece.hf.decode(prompt + reply).endswith(text)
