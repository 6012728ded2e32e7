"""The Triton W4A16 matmul computes what quant.py's dequantize-then-linear computes.

Every (M, shape, group, dtype) is compared with `F.linear(x.float(), dequantize(...))`, the exact
product of the stored codes; the kernel's sums are fp32, so the error left is the 16-bit rounding
of the output (and, on the tensor-core path, of the dequantized weight). Marked `gpu`: skipped
where no CUDA device is present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clawdbot.services.inference.kernels import triton_available
from clawdbot.services.inference.kernels.int4_matmul import (
    Int4Packed,
    int4_dequantize,
    int4_matmul,
    int4_matmul_supported,
    pack_int4_for_triton,
)
from clawdbot.services.inference.quant import Int4Linear, dequantize, quantize_weight

pytestmark = pytest.mark.gpu

# rel. Frobenius error: a bf16 output rounds at ~2e-3, plus as much again for bf16 weights in tl.dot
TOLERANCE = {torch.bfloat16: 1e-2, torch.float16: 2e-3}
REF_336M = [(1024, 1536), (1024, 1024), (1024, 5632), (2816, 1024)]  # (in, out): qkv, o, gate_up, down


@pytest.fixture(autouse=True)
def _needs_triton() -> None:
    if not triton_available():
        pytest.skip("Triton's GPU backend is not available here")


def make_layer(
    in_features: int, out_features: int, group: int, scale_dtype: torch.dtype, seed: int
) -> tuple[torch.Tensor, Int4Packed]:
    """(the exact fp32 weight the codes stand for, the packed layer), on the GPU."""
    generator = torch.Generator(device="cuda").manual_seed(seed)
    weight = torch.randn(out_features, in_features, device="cuda", generator=generator) * 0.05
    qweight, scales, zeros = quantize_weight(weight, group, scale_dtype)
    return dequantize(qweight, scales, zeros), pack_int4_for_triton(qweight, scales, zeros, group)


def rel_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("m", [1, 2, 7, 16, 33, 64, 256, 1000])
@pytest.mark.parametrize(("in_features", "out_features"), REF_336M)
@pytest.mark.parametrize("group", [128, 32])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_matches_dequantized_linear(
    m: int, in_features: int, out_features: int, group: int, dtype: torch.dtype
) -> None:
    scale_dtype = torch.float16 if dtype == torch.bfloat16 else torch.bfloat16  # either pairing
    weight, packed = make_layer(in_features, out_features, group, scale_dtype, seed=m + group)
    x = torch.randn(m, in_features, device="cuda").to(dtype)
    ours = int4_matmul(x, packed)
    assert ours.dtype == dtype and ours.shape == (m, out_features)
    assert torch.isfinite(ours).all()
    assert rel_error(ours, F.linear(x.float(), weight)) < TOLERANCE[dtype]


@pytest.mark.parametrize("m", [1, 5, 40])
def test_odd_shapes_and_strided_rows(m: int) -> None:
    """Columns not a multiple of any tile, K not a multiple of the K step, x rows with a stride."""
    weight, packed = make_layer(1040, 130, 16, torch.float16, seed=m)
    wide = torch.randn(m, 1100, device="cuda", dtype=torch.bfloat16)
    x = wide[:, :1040]
    ours = int4_matmul(x, packed)
    assert rel_error(ours, F.linear(x.float(), weight)) < TOLERANCE[torch.bfloat16]


def test_empty_batch_and_rejections() -> None:
    _, packed = make_layer(256, 64, 128, torch.float16, seed=0)
    assert int4_matmul(torch.empty(0, 256, device="cuda", dtype=torch.bfloat16), packed).shape == (0, 64)
    with pytest.raises(TypeError):
        int4_matmul(torch.zeros(2, 256, device="cuda"), packed)
    assert not int4_matmul_supported(96, 48)
    assert not int4_matmul_supported(64, 8)


@pytest.mark.parametrize("m", [1, 16, 256])
def test_replays_in_a_cuda_graph_with_new_inputs(m: int) -> None:
    weight, packed = make_layer(1024, 1536, 128, torch.bfloat16, seed=7)
    static = torch.randn(m, 1024, device="cuda", dtype=torch.bfloat16)
    for _ in range(2):  # compile and warm up outside the capture
        int4_matmul(static, packed)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = int4_matmul(static, packed)

    fresh = torch.randn(m, 1024, device="cuda", dtype=torch.bfloat16)
    static.copy_(fresh)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert rel_error(out, F.linear(fresh.float(), weight)) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize(
    ("in_features", "out_features", "group"), [*[(k, n, 128) for k, n in REF_336M], (1040, 130, 16)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_kernel_gives_the_stored_weight(
    in_features: int, out_features: int, group: int, dtype: torch.dtype
) -> None:
    """The fp32 arithmetic of quant.dequantize (a fused multiply-add may differ in the last bit),
    then one rounding to the 16-bit dtype."""
    weight, packed = make_layer(in_features, out_features, group, torch.float16, seed=in_features + group)
    ours = int4_dequantize(packed, dtype)
    assert ours.dtype == dtype and ours.shape == (out_features, in_features)
    tolerance = {torch.float32: 1e-6, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(ours.float(), weight, rtol=tolerance, atol=1e-6)


@pytest.mark.parametrize("rows", [Int4Linear.dense_rows - 1, Int4Linear.dense_rows, 256, 4096])
def test_int4_linear_from_dense_rows_takes_the_dense_path_with_the_same_result(rows: int) -> None:
    generator = torch.Generator(device="cuda").manual_seed(rows)
    linear = torch.nn.Linear(1024, 1536, bias=True, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(1536, 1024, device="cuda", generator=generator) * 0.05)
    layer = Int4Linear.from_linear(linear, 128, torch.float16)
    layer.prepare(torch.bfloat16)
    x = torch.randn(rows, 1024, device="cuda", generator=generator).to(torch.bfloat16)
    exact = F.linear(x.float(), dequantize(layer.qweight, layer.scales, layer.zeros), linear.bias.float())
    ours = layer(x)
    assert ours.dtype == torch.bfloat16 and ours.shape == (rows, 1536)
    assert rel_error(ours, exact) < TOLERANCE[torch.bfloat16]
