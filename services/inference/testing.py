"""Tiny random Llama / Mistral / Qwen2 checkpoints built with `transformers`, for tests and examples.

`transformers` writes the folder (`save_pretrained`) and stays the reference model: our loader
reads what it wrote, and its eager attention (which honours sliding windows) gives the logits
we must match.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from clawdbot.services.inference.grounding import Trie, normalise


def tiny_config(family: str, **overrides: Any) -> Any:
    """A transformers config of the family: hidden 64, 2 layers, vocab 512, window 16 where the family has one."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    base: dict[str, Any] = {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6,
        "eos_token_id": 2,
        "bos_token_id": 1,
        "tie_word_embeddings": False,
        "attn_implementation": "eager",
    }
    if family == "mistral":
        base |= {"sliding_window": 16}
        cls: Any = MistralConfig
    elif family == "qwen2":
        base |= {
            "use_sliding_window": True,
            "sliding_window": 16,
            "max_window_layers": 1,
            "num_hidden_layers": 3,
        }
        cls = Qwen2Config
    elif family == "llama":
        cls = LlamaConfig
    else:
        raise ValueError(family)
    return cls(**(base | overrides))


def randomize(model: torch.nn.Module, seed: int, std: float = 0.08) -> None:
    """Random weights, norms and biases too (HF zero-initialises biases, which would hide bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name:
                param.copy_(1 + 0.1 * noise)
            elif name.endswith("bias"):
                param.copy_(0.2 * noise)
            else:
                param.copy_(std * noise)


def tiny_model(family: str, folder: str | Path, seed: int = 0, **overrides: Any) -> Any:
    """Build, randomise and save a tiny model of the family into `folder`; returns the HF model (eval)."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    randomize(model, seed)
    model.eval()
    model.save_pretrained(str(folder))
    return model


@torch.no_grad()
def reference_greedy(model: Any, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens from transformers `generate()` (its own KV cache, EOS disabled so exactly `steps` come)."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0)
    out = model.generate(torch.tensor([prompt]), generation_config=config)
    return [int(t) for t in out[0, len(prompt) :]]


async def eventually(condition: Callable[[], bool], timeout: float, interval: float = 0.005) -> bool:
    """Wait, bounded, until `condition()` holds; for state owned by the engine thread, which has no
    asyncio event to await. Returns the final value so callers can assert on it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with `count` intra-op threads, then restore. Tiny models gain nothing from more, and on a
    shared, oversubscribed CPU OpenMP's spinning threads make them many times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def record_chain_lengths(scheduler: Any) -> list[int]:
    """Every batch's `steps` (decode steps chained in its launch), appended as the scheduler hands
    batches out: a test that compares chained with one-step runs checks that chains happened."""
    seen: list[int] = []
    schedule = scheduler.schedule

    def recording() -> Any:
        batch = schedule()
        seen.append(batch.steps)
        return batch

    scheduler.schedule = recording
    return seen


def digit_vocabulary(size: int) -> list[bytes | None]:
    """The bytes of each token of a made-up vocabulary for grounded decoding tests, where the
    constraint has work at every step: about a third of the tokens are single digits, and every kind
    of token the automaton treats apart is there. Ids 0-2 write nothing (special tokens: <unk>, <s>,
    </s>); tiny models' EOS is 2."""
    table: list[bytes | None] = [None, None, None]
    table += [
        b"12",  # several digits: refused
        b"a7",  # a digit inside a word: refused
        "２".encode() + b"x",  # a whole fullwidth digit with more: refused
        "７".encode(),  # one fullwidth digit: the digit 7
        b"\xef\xbc",  # the lead of a fullwidth character (their punctuation too)
        b"\xef",
        b"\xbc",
        b"\xbc\x95",  # completes "５" after a lone EF
        b"\x99abc",  # completes "９" after EF BC
        "，".encode(),  # fullwidth comma: EF BC 8C
        b" ",
        b"-",
        b".",
        *(bytes([0x90 + d]) for d in range(10)),  # complete ０-９ after EF BC
    ]
    while len(table) < size:
        i = len(table)
        table.append(str(i % 10).encode() if i % 3 == 0 else b"w" if i % 3 == 1 else b"q ")
    return table[:size]


def written_text(tokens: list[int], table: list[bytes | None]) -> str:
    """What a reply reads as (special tokens skipped, fullwidth digits normalised)."""
    return normalise(b"".join(table[t] or b"" for t in tokens).decode("utf-8", errors="replace"))


def runs_are_grounded(tokens: list[int], table: list[bytes | None], grounding: str, cut: bool) -> bool:
    """Every maximal digit run of the reply is a complete run of `grounding`; with `cut` (the reply
    ended by its length limit) the last may be the start of one."""
    trie = Trie.of(grounding)
    text = written_text(tokens, table)
    for match in re.finditer(r"[0-9]+", text):
        at_end = cut and match.end() == len(text)
        if not (trie.leads_to_a_run(match.group()) if at_end else trie.accepts(match.group())):
            return False
    return True
