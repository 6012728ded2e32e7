"""The Triton paged-attention backend computes what the torch reference computes.

Every step is random (caches full of stale data, scattered blocks, windows shorter than the
context, freed -1 columns, shuffled token order) and compared with `torch_paged_attention` on a
copy of the same inputs. Marked `gpu`: skipped where no CUDA device is present.
"""

from __future__ import annotations

import random

import pytest
import torch

from clawdbot.services.inference.attention import torch_paged_attention
from clawdbot.services.inference.kernels import triton_available, triton_paged_attention
from clawdbot.services.inference.kernels.paged_attention import (
    prefill_tile_tokens,
    prefill_tiles,
    store_kv,
    tile_capacity,
)
from clawdbot.services.inference.kernels.synthetic import PagedStep, random_step

pytestmark = pytest.mark.gpu

TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-3}


@pytest.fixture(autouse=True)
def _needs_triton() -> None:
    if not triton_available():
        pytest.skip("Triton's GPU backend is not available here")


def run_both(step: PagedStep) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ours, reference, our k_cache, reference k_cache) from identical copies of the inputs."""
    k_ref, v_ref = step.k_cache.clone(), step.v_cache.clone()
    ref = torch_paged_attention(step.q, step.k, step.v, k_ref, v_ref, step.meta, step.group, step.scale)
    ours = triton_paged_attention(
        step.q, step.k, step.v, step.k_cache, step.v_cache, step.meta, step.group, step.scale
    )
    return ours, ref, step.k_cache, k_ref


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert torch.isfinite(ours).all()
    tol = TOLERANCE[ref.dtype]
    torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (16, 4)])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("window", [0, 200])
def test_decode_matches_reference(
    dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int, window: int
) -> None:
    rng = random.Random(f"{dtype}{heads}{head_dim}{window}")
    batch = rng.choice([1, 5, 33, 64])
    contexts = [rng.randint(1, 1500) for _ in range(batch)]
    step = random_step(
        contexts,
        [1] * batch,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        window=window,
        dtype=dtype,
        freed_columns=2,
        shuffle_tokens=True,
        seed=batch,
    )
    ours, ref, k_ours, k_ref = run_both(step)
    assert_close(ours, ref)
    assert torch.equal(k_ours, k_ref)


@pytest.mark.parametrize(("batch", "window"), [(1, 4096), (4, 4096), (3, 0), (64, 4096), (160, 4096)])
def test_decode_long_contexts_read_only_the_window(batch: int, window: int) -> None:
    rng = random.Random(batch)
    contexts = [rng.randint(4000, 8192) for _ in range(batch)]
    step = random_step(
        contexts, [1] * batch, heads=16, kv_heads=4, head_dim=64, window=window, freed_columns=3, seed=7
    )
    ours, ref, _, _ = run_both(step)
    assert_close(ours, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 4, 64), (16, 4, 128), (8, 4, 64)])
@pytest.mark.parametrize("window", [0, 96])
def test_prefill_and_mixed_steps_match_reference(
    dtype: torch.dtype, heads: int, kv_heads: int, head_dim: int, window: int
) -> None:
    rng = random.Random(f"{dtype}{heads}{window}")
    batch = rng.randint(2, 9)
    query_lens = [rng.choice([1, 1, 7, 40, 130]) for _ in range(batch)]
    contexts = [n + rng.choice([0, 0, 15, 333]) for n in query_lens]
    step = random_step(
        contexts,
        query_lens,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        window=window,
        dtype=dtype,
        freed_columns=1,
        shuffle_tokens=True,
        seed=batch,
    )
    ours, ref, k_ours, k_ref = run_both(step)
    assert_close(ours, ref)
    assert torch.equal(k_ours, k_ref)


@pytest.mark.parametrize(("heads", "kv_heads"), [(16, 4), (4, 4)])
def test_prefill_with_the_runners_tile_table_matches_reference(heads: int, kv_heads: int) -> None:
    """The engine's path: tokens in sequence order, the tile table given (with padding rows, as a
    graph's bucket has), a long prompt chunk beside decodes."""
    query_lens = [1, 300, 1, 17, 64, 1]
    contexts = [900, 300, 40, 500, 64, 4100]
    step = random_step(
        contexts, query_lens, heads=heads, kv_heads=kv_heads, head_dim=64, window=256, freed_columns=1, seed=3
    )
    tile = prefill_tile_tokens(heads, kv_heads)
    step.meta.query_lens = torch.tensor(query_lens, device="cuda")
    capacity = tile_capacity(sum(query_lens), len(query_lens), tile) + 7
    step.meta.tiles = prefill_tiles(step.meta.query_lens, tile, capacity)
    ours, ref, k_ours, k_ref = run_both(step)
    assert_close(ours, ref)
    assert torch.equal(k_ours, k_ref)


def test_negative_slots_write_nothing() -> None:
    step = random_step([40, 20], [1, 1], heads=4, kv_heads=4, head_dim=64)
    before = step.k_cache.clone()
    store_kv(step.k, step.v, step.k_cache, step.v_cache, torch.full_like(step.group.slot_mapping, -1))
    assert torch.equal(step.k_cache, before)


def test_decode_replays_in_a_cuda_graph_with_new_inputs() -> None:
    batch, width, pool = 16, 80, 16 * 80 + 8
    shape = {"heads": 16, "kv_heads": 4, "head_dim": 64, "window": 512, "table_width": width}
    first = random_step([700 + 37 * b for b in range(batch)], [1] * batch, num_blocks=pool, seed=1, **shape)
    static = first
    for _ in range(2):  # compile and warm up outside the capture
        triton_paged_attention(
            static.q,
            static.k,
            static.v,
            static.k_cache,
            static.v_cache,
            static.meta,
            static.group,
            static.scale,
        )
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = triton_paged_attention(
            static.q,
            static.k,
            static.v,
            static.k_cache,
            static.v_cache,
            static.meta,
            static.group,
            static.scale,
        )

    rng = random.Random(5)
    second = random_step(
        [rng.randint(1, 1200) for _ in range(batch)], [1] * batch, num_blocks=pool, seed=2, **shape
    )
    for name in ("q", "k", "v", "k_cache", "v_cache"):
        getattr(static, name).copy_(getattr(second, name))
    for name in ("positions", "query_slot", "context_lens"):
        getattr(static.meta, name).copy_(getattr(second.meta, name))
    for name in ("slot_mapping", "block_tables", "first_block"):
        getattr(static.group, name).copy_(getattr(second.group, name))
    k_ref, v_ref = second.k_cache.clone(), second.v_cache.clone()
    ref = torch_paged_attention(
        second.q, second.k, second.v, k_ref, v_ref, second.meta, second.group, second.scale
    )
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(out, ref)
    assert torch.equal(static.k_cache, k_ref)
