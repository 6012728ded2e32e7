"""The tokenizer domain: a Hugging Face tokenizer folder behind a safe, batch-friendly API.

Safety rule: special and added tokens written in text (user input, tool results, anything a
person can type) are plain text. Only the chat template itself, and names the caller lists in
`allowed_special`, produce control tokens, so nobody can inject `<|im_end|>` into a prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from clawdbot.services.tokenizer.detokenizer import IncrementalDetokenizer
from clawdbot.shared.errors import FailedPrecondition, InvalidArgument

_SENTINEL_OPEN, _SENTINEL_CLOSE = "\ue000", "\ue001"
_SENTINEL_RE = re.compile(f"{_SENTINEL_OPEN}(\\d+){_SENTINEL_CLOSE}")
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class SpecialTokenInfo:
    content: str
    id: int
    role: str


class TextTokenizer:
    """Encode, decode, chat templates and streaming decode for one tokenizer folder."""

    def __init__(self, model_dir: Path) -> None:
        if not (model_dir / "tokenizer.json").exists():
            raise FailedPrecondition(f"{model_dir} has no tokenizer.json", field="model")
        self.model_dir = model_dir
        self.hf: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(model_dir))
        spec = json.loads(self.hf.backend_tokenizer.to_str())
        self.added: dict[str, int] = {tok["content"]: int(tok["id"]) for tok in spec.get("added_tokens", [])}
        spec["added_tokens"] = []
        # The same tokenizer with no added tokens: it encodes "<|im_end|>" as the literal text.
        self._plain = Tokenizer.from_str(json.dumps(spec))
        self._added_by_length = sorted(self.added, key=len, reverse=True)
        self._added_re = re.compile("|".join(map(re.escape, self._added_by_length))) if self.added else None
        self.vocab_size = len(self.hf)
        self.prefix_ids, self.suffix_ids = self._special_wrapping()
        self.eos_token_ids = self._eos_ids()
        self.byte_fallback_ids = self._byte_fallback_ids(spec)

    # ---- encoding -------------------------------------------------------------------------

    def _special_wrapping(self) -> tuple[list[int], list[int]]:
        """The ids `add_special_tokens` puts before and after a text (BOS, EOS), found by diffing."""
        bare = self.hf.encode("a", add_special_tokens=False)
        full = self.hf.encode("a", add_special_tokens=True)
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return list(full[:start]), list(full[start + len(bare) :])
        return [], []

    def check_allowed(self, allowed_special: Iterable[str]) -> list[str]:
        allowed = list(dict.fromkeys(allowed_special))
        unknown = [name for name in allowed if name not in self.added]
        if unknown:
            raise InvalidArgument(
                f"unknown special token(s) {unknown}; known: {sorted(self.added)}", field="allowed_special"
            )
        return allowed

    def encode_plain(self, texts: Sequence[str]) -> list[list[int]]:
        """Texts with every special token treated as text (the safe default), batched in Rust."""
        return [enc.ids for enc in self._plain.encode_batch(list(texts), add_special_tokens=False)]

    def encode_with_offsets(
        self, text: str, allowed: Sequence[str] = ()
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and character offsets; only `allowed` special tokens are recognised in the text."""
        if not allowed:
            enc = self._plain.encode(text, add_special_tokens=False)
            return list(enc.ids), [tuple(o) for o in enc.offsets]  # type: ignore[misc]
        pattern = re.compile("|".join(re.escape(t) for t in sorted(allowed, key=len, reverse=True)))
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        pos = 0
        for match in pattern.finditer(text):
            self._encode_segment(text, pos, match.start(), ids, offsets)
            ids.append(self.added[match.group()])
            offsets.append((match.start(), match.end()))
            pos = match.end()
        self._encode_segment(text, pos, len(text), ids, offsets)
        return ids, offsets

    def _encode_segment(
        self, text: str, start: int, end: int, ids: list[int], offsets: list[tuple[int, int]]
    ) -> None:
        if start >= end:
            return
        enc = self._plain.encode(text[start:end], add_special_tokens=False)
        ids.extend(enc.ids)
        offsets.extend((start + a, start + b) for a, b in enc.offsets)

    def encode(
        self, texts: Sequence[str], *, add_special_tokens: bool = False, allowed_special: Sequence[str] = ()
    ) -> list[list[int]]:
        allowed = self.check_allowed(allowed_special)
        batch = (
            self.encode_plain(texts)
            if not allowed
            else [self.encode_with_offsets(t, allowed)[0] for t in texts]
        )
        if add_special_tokens:
            batch = [self.prefix_ids + ids + self.suffix_ids for ids in batch]
        return batch

    # ---- decoding -------------------------------------------------------------------------

    def check_ids(self, ids: Iterable[int], field: str) -> None:
        for i in ids:
            if i >= self.vocab_size:
                raise InvalidArgument(
                    f"token id {i} is outside the vocabulary (size {self.vocab_size})", field=field
                )

    def decode_one(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return str(self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def decode(self, sequences: Sequence[Sequence[int]], *, skip_special_tokens: bool = False) -> list[str]:
        return [
            str(t)
            for t in self.hf.batch_decode(
                [list(s) for s in sequences], skip_special_tokens=skip_special_tokens
            )
        ]

    def detokenizer(
        self, *, skip_special_tokens: bool = False, prefix_ids: Sequence[int] = ()
    ) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(
            self.decode_one,
            skip_special_tokens=skip_special_tokens,
            prefix_ids=prefix_ids,
            holdback_ids=self.byte_fallback_ids,
        )

    @staticmethod
    def _byte_fallback_ids(spec: dict[str, Any]) -> frozenset[int]:
        """Ids of `<0xNN>` tokens when the decoder groups them (ByteFallback); empty otherwise."""
        if "ByteFallback" not in json.dumps(spec.get("decoder")):
            return frozenset()
        vocab = spec.get("model", {}).get("vocab", {})
        if not isinstance(vocab, dict):
            return frozenset()
        return frozenset(int(vocab[n]) for n in (f"<0x{i:02X}>" for i in range(256)) if n in vocab)

    # ---- chat templates -------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.hf, "chat_template", None))

    def _guard(self, value: Any) -> Any:
        """Replace added-token strings in every string of `value` by sentinels the template passes through."""
        if isinstance(value, str):
            if self._added_re is None:
                return value
            return self._added_re.sub(
                lambda m: f"{_SENTINEL_OPEN}{self._added_by_length.index(m.group())}{_SENTINEL_CLOSE}", value
            )
        if isinstance(value, Mapping):
            return {k: self._guard(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._guard(v) for v in value]
        return value

    def _unguard(self, text: str) -> str:
        return _SENTINEL_RE.sub(lambda m: self._added_by_length[int(m.group(1))], text)

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] = (),
        *,
        add_generation_prompt: bool = True,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> tuple[list[int], str]:
        """Ids and text of the templated conversation; control tokens come from the template alone."""
        if not self.has_chat_template:
            raise FailedPrecondition(
                f"the tokenizer in {self.model_dir} has no chat template", field="messages"
            )
        try:
            rendered = self.hf.apply_chat_template(
                self._guard(list(messages)),
                tools=self._guard(list(tools)) or None,
                add_generation_prompt=add_generation_prompt,
                tokenize=False,
                **dict(template_kwargs or {}),
            )
        except Exception as exc:  # jinja raises many types; the caller needs the message
            raise InvalidArgument(
                f"the chat template cannot render these messages: {exc}", field="messages"
            ) from exc
        assert isinstance(rendered, str)
        ids: list[int] = []
        pos = 0
        for match in self._added_re.finditer(rendered) if self._added_re else ():
            ids.extend(
                self.encode_plain([self._unguard(rendered[pos : match.start()])])[0]
                if match.start() > pos
                else []
            )
            ids.append(self.added[match.group()])
            pos = match.end()
        if pos < len(rendered):
            ids.extend(self.encode_plain([self._unguard(rendered[pos:])])[0])
        return ids, self._unguard(rendered)

    # ---- facts ----------------------------------------------------------------------------

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        if self.hf.eos_token_id is not None:
            ids.append(int(self.hf.eos_token_id))
        gen_config = self.model_dir / "generation_config.json"
        if gen_config.exists():
            eos = json.loads(gen_config.read_text(encoding="utf-8")).get("eos_token_id")
            for i in eos if isinstance(eos, list) else [eos] if eos is not None else []:
                if int(i) not in ids:
                    ids.append(int(i))
        return ids

    def special_tokens(self) -> list[SpecialTokenInfo]:
        roles = {
            "bos": self.hf.bos_token,
            "eos": self.hf.eos_token,
            "pad": self.hf.pad_token,
            "unk": self.hf.unk_token,
        }
        out: list[SpecialTokenInfo] = []
        for content in self.hf.all_special_tokens:
            role = next((r for r, tok in roles.items() if tok == content), "additional")
            out.append(
                SpecialTokenInfo(content, self.added.get(content, self.hf.get_vocab().get(content, -1)), role)
            )
        return out

    @property
    def bos_token_id(self) -> int | None:
        return None if self.hf.bos_token_id is None else int(self.hf.bos_token_id)

    @property
    def model_max_length(self) -> int:
        return int(min(int(self.hf.model_max_length), UINT64_MAX))
