"""A request's whole state as the engine sees it: tokens, progress through the cache, sampling, outcome."""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass, field
from enum import Enum

from clawdbot.services.inference.grounding import Trie


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Finish(Enum):
    """Why a sequence ended; the server maps these to the proto's FinishReason."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True)
class SamplingParams:
    """Validated sampling settings (see `validation.py` for the ranges)."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = 0
    max_tokens: int = 16
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    min_tokens: int = 0

    @functools.cached_property  # asked for every running sequence every step
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


_arrivals = itertools.count()

# A token the device has sampled but the host has not read yet (see Engine.step): a step can be
# scheduled and launched on top of the one still running, its input taken from that step's output.
PENDING = -1


@dataclass(eq=False)
class Sequence:
    """One request. `num_computed` tokens of `token_ids` have their K/V in the cache."""

    request_id: str
    token_ids: list[int]
    params: SamplingParams
    priority: int = 0
    deadline: float | None = None  # time.monotonic() past which the request ends with ABORT
    num_prompt: int = 0
    num_computed: int = 0
    num_cached_prompt: int = 0  # prompt tokens the prefix cache served at first admission
    status: Status = Status.WAITING
    finish: Finish | None = None
    stop_token_id: int | None = None
    arrival: int = field(default_factory=lambda: next(_arrivals))
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    last_token_time: float | None = None
    admitted: bool = False  # has been admitted at least once (prefix lookup done)
    pending_row: int = -1  # while token_ids ends with PENDING: its row in the in-flight step's samples
    grounding: str | None = None  # grounded decoding's text (None: not grounded; grounding.py)
    trie: Trie | None = None  # its digit runs, made by the engine when the request arrives

    def __post_init__(self) -> None:
        # Our own list: the output is appended to it, and the caller's prompt must stay the prompt
        # (a caller that submits the same prompt twice would otherwise send prompt + reply).
        self.token_ids = list(self.token_ids)
        if not self.num_prompt:
            self.num_prompt = len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - self.num_prompt

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt :]

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status is Status.FINISHED
