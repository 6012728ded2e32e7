"""Optional dense retrieval: a local sentence-embedding model folder (a tiny random BERT that the
test saves with save_pretrained) fused with BM25; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawdbot.services.plugins.base import PluginContext
from clawdbot.services.plugins.builtin.retrieval import Bm25Retrieval, RetrievalSettings

PASSAGES = [
    ("退款多久到账", "验货后1-3个工作日原路退款。"),
    ("运费多少", "订单满99元包邮，不满99元收取运费10元。"),
    ("保修多久", "手机保修12个月，小爪家居24个月。"),
]


def tiny_model(folder: Path, texts: list[str]) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for text in texts for c in text.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars if c.isascii())]
    (folder / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.mark.slow
async def test_dense_scores_are_fused_with_bm25(tmp_path: Path) -> None:
    faq = tmp_path / "faq.jsonl"
    faq.write_text(
        "\n".join(
            json.dumps({"id": f"q{i}", "zh": {"q": q, "a": a}}, ensure_ascii=False)
            for i, (q, a) in enumerate(PASSAGES)
        ),
        encoding="utf-8",
    )
    texts = [f"Q: {q}\nA: {a}" for q, a in PASSAGES]
    model = tiny_model(tmp_path / "model", [*texts, "这个东西怎么样"])
    settings = RetrievalSettings.model_validate(
        {
            "sources": [{"path": "faq.jsonl", "format": "faq"}],
            "dense": {"model_dir": "model", "weight": 1.0, "min_score": 0.0},
        }
    )
    retrieval = Bm25Retrieval("dense", settings, PluginContext(tmp_path))
    await retrieval.setup()
    # Only the dense score counts (weight 1): the passage's own text embeds identically, cosine 1.
    for text, (question, _) in zip(texts, PASSAGES, strict=True):
        best = (await retrieval.search(text, 1))[0]
        assert best.title == question
    # With no word in common BM25 gives nothing; the fused score is the dense share of the cosine.
    scores, threshold = retrieval._scores("这个东西怎么样")
    cosines = retrieval._dense.similarities("这个东西怎么样")
    assert threshold == 0.0
    assert scores == pytest.approx([max(0.0, c) for c in cosines])
    assert model.joinpath("config.json").is_file()
