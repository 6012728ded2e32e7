"""Tokenizers for the tests: the bundled byte-level BPE one and a SentencePiece-style one built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from clawdbot.services.tokenizer.assets import DEFAULT_MODEL_DIR
from clawdbot.services.tokenizer.tokenizer import TextTokenizer

SAMPLE_TEXT = [
    "您好，请问订单SO20261125001现在到哪里了？我想退货。",
    "Hello! Where is my order? I'd like a refund, please.",
    "混合 mixed 文本 text，价格 ¥199 / $29.99。",
    "Emoji 🎉👍🏽 and 家庭 👨‍👩‍👧 ok ✅",
    "  leading spaces,\ttabs\nand new lines\n\n",
]


@pytest.fixture(scope="session")
def bundled() -> TextTokenizer:
    return TextTokenizer(DEFAULT_MODEL_DIR)


@pytest.fixture(scope="session")
def sentencepiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-2-style tokenizer: Metaspace spaces, byte fallback for unseen characters, BOS."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
        show_progress=False,
        min_frequency=1,
    )
    tok.train_from_iterator(
        SAMPLE_TEXT * 20 + ["the quick brown fox jumps over the lazy dog"] * 20, trainer=trainer
    )
    # The trainer put the byte tokens into the vocabulary as special tokens; like Llama's, they
    # must be ordinary vocabulary entries (decoded, never skipped).
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in byte_tokens]
    tok = Tokenizer.from_str(json.dumps(spec))
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    out = tmp_path_factory.mktemp("sp-tokenizer")
    fast.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def sentencepiece(sentencepiece_dir: Path) -> TextTokenizer:
    return TextTokenizer(sentencepiece_dir)
