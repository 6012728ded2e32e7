"""Batched sampling on the device: grounding, penalties, temperature, top-k / top-p / min-p, seeded
noise, logprobs.

One call samples the whole batch with tensor ops. Randomness is counter-based: the Gumbel noise for
(seed, step, token id) comes from an integer hash, so a request's draws depend on its own seed and
position only, never on what else shares the batch, and no per-request generator is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from clawdbot.services.inference.grounding_mask import GroundingRows

_M32 = 0xFFFFFFFF


@dataclass
class SamplingTensors:
    """Per-row parameters of one step, built by the model runner ([B] unless noted)."""

    temperature: torch.Tensor  # float; 0 = greedy
    top_k: torch.Tensor  # long; 0 = off
    top_p: torch.Tensor  # float
    min_p: torch.Tensor  # float
    seeds: torch.Tensor  # long
    steps: torch.Tensor  # long: tokens generated so far (the counter of the noise)
    suppress: torch.Tensor | None = None  # [B, S] long, -1 padded: ids banned this step (min_tokens)
    repetition_penalty: torch.Tensor | None = None  # float
    presence_penalty: torch.Tensor | None = None
    frequency_penalty: torch.Tensor | None = None
    seen: torch.Tensor | None = None  # [B, V] bool: in prompt or output (repetition penalty)
    output_counts: torch.Tensor | None = None  # [B, V] float: occurrences in the output
    num_top_logprobs: int = 0  # max alternatives any row asked for; -1 = no logprobs at all
    all_greedy: bool = False  # known on the host: skip the sampling path without asking the device
    grounding: GroundingRows | None = None  # some row is grounded (grounding_mask.py)


@dataclass
class SamplerOutput:
    tokens: torch.Tensor  # [B] long
    logprobs: torch.Tensor | None = None  # [B] float: chosen token
    top_ids: torch.Tensor | None = None  # [B, n]
    top_logprobs: torch.Tensor | None = None  # [B, n]


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash (lowbias32); products stay below 2^63 in int64."""
    x = x & _M32
    x = ((x >> 16) ^ x) * 0x7FEB352D & _M32
    x = ((x >> 15) ^ x) * 0x297A2D39 & _M32
    return (x >> 16) ^ x


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """U(0,1) [B, V] from (seed, step, token id) alone: batch-invariant by construction."""
    ids = torch.arange(vocab, device=seeds.device, dtype=torch.long)[None, :]
    key = _mix(_mix(seeds & _M32) ^ (seeds >> 32) & _M32)
    key = _mix(key ^ _mix(steps * 0x9E3779B1))[:, None]
    bits = _mix(key ^ _mix(ids + 0x632BE5AB))
    return ((bits >> 8).double() + 0.5) / float(1 << 24)


def apply_penalties(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    if t.repetition_penalty is not None and t.seen is not None:
        penalty = t.repetition_penalty[:, None]
        scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(t.seen, scaled, logits)
    if t.output_counts is not None and t.presence_penalty is not None and t.frequency_penalty is not None:
        counts = t.output_counts
        logits = logits - t.frequency_penalty[:, None] * counts - t.presence_penalty[:, None] * (counts > 0)
    return logits


def filter_logits(logits: torch.Tensor, t: SamplingTensors) -> torch.Tensor:
    """Mask (to -inf) what top-k, top-p and min-p exclude; each row keeps at least its best token."""
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None, :]
    k = torch.where(t.top_k > 0, t.top_k, torch.full_like(t.top_k, vocab))[:, None]
    drop = rank >= k
    probs = sorted_logits.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass strictly above each token
    drop |= (before >= t.top_p[:, None]) & (t.top_p[:, None] < 1)
    drop |= probs < t.min_p[:, None] * probs[:, :1]
    drop[:, 0] = False
    masked = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(1, order, masked)


def sample(logits: torch.Tensor, t: SamplingTensors) -> SamplerOutput:
    """Next tokens for a batch of fp32 logits [B, V].

    Grounded rows first get the grounding mask (what the constraint refuses to -inf) and their
    automaton state is advanced by the token drawn; their logprobs are those of the masked logits,
    the distribution the token was drawn from before penalties and temperature.
    """
    grounded_step = None
    if t.grounding is not None:
        logits, grounded_step = t.grounding.mask(logits)
    raw = logits
    if t.suppress is not None:
        # Padding (-1) goes to a spare column that is dropped: no boolean-mask indexing, which would
        # make the host wait for the device to learn the result's size.
        vocab = logits.shape[-1]
        banned = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
        banned.scatter_(1, torch.where(t.suppress >= 0, t.suppress, vocab), True)
        logits = logits.masked_fill(banned[:, :vocab], float("-inf"))
    logits = apply_penalties(logits, t)
    greedy_tokens = logits.argmax(dim=-1)
    if t.all_greedy:
        tokens = greedy_tokens
    else:
        greedy = t.temperature <= 0
        temp = torch.where(greedy, torch.ones_like(t.temperature), t.temperature)
        scaled = filter_logits(logits / temp[:, None], t)
        gumbel = -torch.log(-torch.log(uniform_noise(t.seeds, t.steps, logits.shape[-1])))
        sampled = (scaled.double() + gumbel).argmax(dim=-1)
        tokens = torch.where(greedy, greedy_tokens, sampled)
    if t.grounding is not None and grounded_step is not None:
        t.grounding.advance(tokens, grounded_step)
    out = SamplerOutput(tokens=tokens)
    if t.num_top_logprobs >= 0:
        logprobs = raw.log_softmax(dim=-1)
        out.logprobs = logprobs.gather(1, tokens[:, None]).squeeze(1)
        if t.num_top_logprobs > 0:
            out.top_logprobs, out.top_ids = logprobs.topk(t.num_top_logprobs, dim=-1)
    return out
