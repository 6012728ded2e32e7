"""The fused Triton kernels compute what the torch code of the decoder layer computes.

Each kernel is compared with the torch it replaces (the residual add and `RMSNorm.forward`,
`apply_rope`, `F.silu(gate) * up`) over dtypes, row counts (0 included), widths and head sizes,
RoPE on q/k views of a fused qkv output with GQA; then all of them are captured in one CUDA graph
and replayed on new inputs. The residual sum and RoPE round like the torch ops and must match
bitwise; the norm and SiLU may differ by an ulp or two. Marked `gpu`: skipped where no CUDA device
is present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clawdbot.services.inference.config import RopeConfig
from clawdbot.services.inference.kernels import triton_available
from clawdbot.services.inference.kernels.fused import add_rms_norm, rms_norm, rope_qk_, silu_mul
from clawdbot.services.inference.model.layers import RMSNorm
from clawdbot.services.inference.model.rope import RotaryEmbedding, apply_rope

pytestmark = pytest.mark.gpu

DEVICE = torch.device("cuda")
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
ROWS = [0, 1, 7, 256, 4096]
WIDTHS = [64, 1024, 2816]
TOLERANCE = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 1e-5}


@pytest.fixture(autouse=True)
def _needs_triton() -> None:
    if not triton_available():
        pytest.skip("Triton's GPU backend is not available here")


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert torch.isfinite(ours).all()
    tol = TOLERANCE[ref.dtype]
    torch.testing.assert_close(ours.float(), ref.float(), atol=tol, rtol=tol)


def make_norm(hidden: int, dtype: torch.dtype) -> RMSNorm:
    norm = RMSNorm(hidden, 1e-6).to(DEVICE, dtype).requires_grad_(False)
    norm.weight.copy_(1 + 0.5 * torch.randn(hidden, device=DEVICE))
    return norm


def rand(*shape: int, dtype: torch.dtype, scale: float = 3.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, device=DEVICE)).to(dtype)


def cos_sin(tokens: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    rotary = RotaryEmbedding(RopeConfig(theta=500000.0), head_dim, 8192).to(DEVICE)
    return rotary(torch.randint(0, 8192, (tokens,), device=DEVICE))


def qkv_views(
    qkv: torch.Tensor, heads: int, kv_heads: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v as `Attention.forward` makes them: strided views of the fused projection's output."""
    tokens = qkv.shape[0]
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    return (
        q.view(tokens, heads, head_dim),
        k.view(tokens, kv_heads, head_dim),
        v.view(tokens, kv_heads, head_dim),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", WIDTHS)
def test_add_rms_norm_matches_reference(dtype: torch.dtype, rows: int, hidden: int) -> None:
    torch.manual_seed(rows * hidden)
    norm = make_norm(hidden, dtype)
    x, residual = rand(rows, hidden, dtype=dtype), rand(rows, hidden, dtype=dtype)
    total = x + residual
    normed, new_residual = add_rms_norm(x, residual, norm.weight, norm.eps)
    assert torch.equal(new_residual, total)
    assert_close(normed, norm(total))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("hidden", WIDTHS)
def test_rms_norm_matches_reference(dtype: torch.dtype, rows: int, hidden: int) -> None:
    torch.manual_seed(rows * hidden + 1)
    norm = make_norm(hidden, dtype)
    x = rand(rows, hidden, dtype=dtype)
    assert_close(rms_norm(x, norm.weight, norm.eps), norm(x))
    strided = rand(rows, hidden + 32, dtype=dtype)[:, 16 : 16 + hidden]
    assert_close(rms_norm(strided, norm.weight, norm.eps), norm(strided))


@pytest.mark.parametrize("hidden", [4096, 5120, 8192])
def test_rms_norm_wide_rows(hidden: int) -> None:
    torch.manual_seed(hidden)
    norm = make_norm(hidden, torch.bfloat16)
    x, residual = rand(33, hidden, dtype=torch.bfloat16), rand(33, hidden, dtype=torch.bfloat16)
    normed, new_residual = add_rms_norm(x, residual, norm.weight, norm.eps)
    assert torch.equal(new_residual, x + residual)
    assert_close(normed, norm(x + residual))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize(("heads", "kv_heads"), [(16, 4), (4, 4)])
def test_rope_matches_reference(
    dtype: torch.dtype, rows: int, head_dim: int, heads: int, kv_heads: int
) -> None:
    torch.manual_seed(rows * head_dim + heads)
    qkv = rand(rows, (heads + 2 * kv_heads) * head_dim, dtype=dtype, scale=1.0)
    q, k, v = qkv_views(qkv, heads, kv_heads, head_dim)
    cos, sin = cos_sin(rows, head_dim)
    q_ref, k_ref, v_before = apply_rope(q, cos, sin), apply_rope(k, cos, sin), v.clone()
    rope_qk_(q, k, cos, sin)
    assert torch.equal(q, q_ref)
    assert torch.equal(k, k_ref)
    assert torch.equal(v, v_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("intermediate", WIDTHS)
def test_silu_mul_matches_reference(dtype: torch.dtype, rows: int, intermediate: int) -> None:
    torch.manual_seed(rows * intermediate + 2)
    gate_up = rand(rows, 2 * intermediate, dtype=dtype)
    gate, up = gate_up.split(intermediate, dim=-1)
    assert_close(silu_mul(gate_up, intermediate), F.silu(gate) * up)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_graph_replays_on_new_inputs(dtype: torch.dtype) -> None:
    """The decode path's use: every kernel captured once, replayed after the inputs are overwritten."""
    torch.manual_seed(3)
    tokens, hidden, heads, kv_heads, head_dim, intermediate = 8, 1024, 16, 4, 128, 2816
    norm = make_norm(hidden, dtype)
    x, residual = rand(tokens, hidden, dtype=dtype), rand(tokens, hidden, dtype=dtype)
    qkv = rand(tokens, (heads + 2 * kv_heads) * head_dim, dtype=dtype, scale=1.0)
    cos, sin = cos_sin(tokens, head_dim)
    gate_up = rand(tokens, 2 * intermediate, dtype=dtype)

    def step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        normed, new_residual = add_rms_norm(x, residual, norm.weight, norm.eps)
        q, k, _ = qkv_views(qkv, heads, kv_heads, head_dim)
        rope_qk_(q, k, cos, sin)
        return normed, new_residual, silu_mul(gate_up, intermediate)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # compiles every kernel outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        normed, new_residual, act = step()

    for seed in (4, 5):
        torch.manual_seed(seed)
        x.copy_(rand(tokens, hidden, dtype=dtype))
        residual.copy_(rand(tokens, hidden, dtype=dtype))
        fresh_qkv = rand(tokens, qkv.shape[1], dtype=dtype, scale=1.0)
        qkv.copy_(fresh_qkv)
        new_cos, new_sin = cos_sin(tokens, head_dim)
        cos.copy_(new_cos)
        sin.copy_(new_sin)
        gate_up.copy_(rand(tokens, 2 * intermediate, dtype=dtype))
        graph.replay()
        torch.cuda.synchronize()

        assert torch.equal(new_residual, x + residual)
        assert_close(normed, norm(x + residual))
        q_ref, k_ref, v_ref = qkv_views(fresh_qkv, heads, kv_heads, head_dim)
        q, k, v = qkv_views(qkv, heads, kv_heads, head_dim)
        assert torch.equal(q, apply_rope(q_ref, cos, sin))
        assert torch.equal(k, apply_rope(k_ref, cos, sin))
        assert torch.equal(v, v_ref)
        gate, up = gate_up.split(intermediate, dim=-1)
        assert_close(act, F.silu(gate) * up)
