"""Batched sampling: each knob does what it says, and a seed's draws do not depend on the batch."""

from __future__ import annotations

import torch

from clawdbot.services.inference.sampler import SamplingTensors, sample, uniform_noise

V = 64


def tensors(batch: int, **overrides: object) -> SamplingTensors:
    base: dict[str, object] = {
        "temperature": torch.ones(batch),
        "top_k": torch.zeros(batch, dtype=torch.long),
        "top_p": torch.ones(batch),
        "min_p": torch.zeros(batch),
        "seeds": torch.arange(batch, dtype=torch.long) + 100,
        "steps": torch.zeros(batch, dtype=torch.long),
    }
    base.update(overrides)
    return SamplingTensors(**base)  # type: ignore[arg-type]


def logits_of(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_rows_take_the_argmax_while_others_sample() -> None:
    logits = logits_of(4)
    t = tensors(4, temperature=torch.tensor([0.0, 1.0, 0.0, 1.0]))
    out = sample(logits, t)
    assert out.tokens[0] == logits[0].argmax() and out.tokens[2] == logits[2].argmax()


def test_top_k_one_and_tiny_top_p_are_greedy() -> None:
    logits = logits_of(6, seed=1)
    for steps in range(5):
        by_k = sample(
            logits, tensors(6, top_k=torch.ones(6, dtype=torch.long), steps=torch.full((6,), steps))
        )
        by_p = sample(logits, tensors(6, top_p=torch.full((6,), 1e-6), steps=torch.full((6,), steps)))
        assert torch.equal(by_k.tokens, logits.argmax(-1)) and torch.equal(by_p.tokens, logits.argmax(-1))


def test_top_k_restricts_draws_to_the_k_best() -> None:
    logits = logits_of(1, seed=2).expand(200, V).contiguous()
    t = tensors(200, top_k=torch.full((200,), 3, dtype=torch.long), seeds=torch.arange(200, dtype=torch.long))
    allowed = set(logits[0].topk(3).indices.tolist())
    drawn = set(sample(logits, t).tokens.tolist())
    assert drawn <= allowed and len(drawn) > 1


def test_min_p_drops_unlikely_tokens() -> None:
    logits = logits_of(1, seed=3).expand(300, V).contiguous()
    probs = logits[0].softmax(-1)
    t = tensors(300, min_p=torch.full((300,), 0.2), seeds=torch.arange(300, dtype=torch.long))
    drawn = sample(logits, t).tokens
    assert bool((probs[drawn] >= 0.2 * probs.max()).all())


def test_sampling_follows_the_softmax_distribution() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(4000, 4).contiguous()
    t = tensors(4000, seeds=torch.arange(4000, dtype=torch.long), temperature=torch.full((4000,), 0.7))
    counts = torch.bincount(sample(logits, t).tokens, minlength=4).float() / 4000
    expected = (logits[0] / 0.7).softmax(-1)
    assert (counts - expected).abs().max().item() < 0.03


def test_seeded_draws_are_batch_invariant_and_vary_with_the_step() -> None:
    logits = logits_of(8, seed=4)
    alone = sample(logits[3:4], tensors(1, seeds=torch.tensor([42]), steps=torch.tensor([5]))).tokens
    seeds = torch.arange(8, dtype=torch.long)
    seeds[3] = 42
    steps = torch.arange(8, dtype=torch.long)
    steps[3] = 5
    batched = sample(logits, tensors(8, seeds=seeds, steps=steps)).tokens
    assert batched[3] == alone[0]
    noise = uniform_noise(torch.tensor([42, 42]), torch.tensor([5, 6]), V)
    assert not torch.equal(noise[0], noise[1])
    assert float(noise.min()) > 0 and float(noise.max()) < 1


def test_suppressed_ids_are_never_drawn() -> None:
    logits = torch.zeros(2, V)
    logits[:, 7] = 50.0  # would always win
    t = tensors(2, temperature=torch.zeros(2), suppress=torch.tensor([[7, -1], [-1, -1]]))
    out = sample(logits, t)
    assert out.tokens[0] != 7 and out.tokens[1] == 7


def test_penalties_push_seen_tokens_down() -> None:
    logits = torch.zeros(3, V)
    logits[:, 5] = 1.0
    logits[:, 6] = 0.9
    seen = torch.zeros(3, V, dtype=torch.bool)
    seen[:, 5] = True
    counts = torch.zeros(3, V)
    counts[:, 5] = 2
    t = tensors(
        3,
        temperature=torch.zeros(3),
        repetition_penalty=torch.tensor([1.5, 1.0, 1.0]),
        presence_penalty=torch.tensor([0.0, 0.5, 0.0]),
        frequency_penalty=torch.tensor([0.0, 0.0, 0.1]),
        seen=seen,
        output_counts=counts,
    )
    assert sample(logits, t).tokens.tolist() == [6, 6, 6]


def test_logprobs_and_top_alternatives() -> None:
    logits = logits_of(2, seed=5)
    t = tensors(2, temperature=torch.zeros(2))
    t.num_top_logprobs = 3
    out = sample(logits, t)
    expected = logits.log_softmax(-1)
    assert out.logprobs is not None and out.top_ids is not None and out.top_logprobs is not None
    assert torch.allclose(out.logprobs, expected.gather(1, out.tokens[:, None]).squeeze(1))
    assert torch.equal(out.top_ids, expected.topk(3).indices)
    assert torch.equal(out.top_ids[:, 0], out.tokens)
