"""GGUF checkpoints: tiny files written here with gguf-py's GGUFWriter from tiny transformers models,
converted to an HF folder and loaded through our loader.

- Q4_K and Q6_K (gguf-py cannot quantize them): blocks hand-built from the format's layout decode to
  the values the format defines; files whose weights we K-quantize here load to exactly those values.
- Gemma 3 files of every type give the logits transformers gives for the same file (`gguf_file=`),
  within 1e-4 in fp32; an F32 file gives the source model's logits; Llama (q/k rows permuted by
  llama.cpp) and Qwen2 (biases) files give their source model's logits.
- The config comes from the metadata (and what llama.cpp hard-codes for Gemma 3), the tokenizer from
  the metadata too (the tokenizer service reads the folder), the folder is cached and reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from test_gemma3 import prefill_logits, prompt_of, reference_logits, tiny_gemma

from clawdbot.services.inference.config import load_config
from clawdbot.services.inference.model import gguf as ours
from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.testing import reference_greedy, tiny_model
from clawdbot.shared.errors import InvalidArgument

TOL = 1e-4

# ---- K-quant blocks, from the format's layout (ggml-common.h block_q4_K / block_q6_K) -------------


def pack_q4k(d: np.ndarray, dmin: np.ndarray, sc: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """144-byte blocks: d, dmin (fp16); 8 six-bit scales and mins in 12 bytes; 256 four-bit codes,
    each 32-byte run holding two sub-blocks (low nibbles the first, high nibbles the second).
    value = d * sc[sub] * q - dmin * m[sub]."""
    n = len(d)
    sc, m, q = sc.astype(np.uint8), m.astype(np.uint8), q.astype(np.uint8)
    scales = np.zeros((n, 12), np.uint8)
    scales[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    runs = q.reshape(n, 4, 2, 32)
    qs = (runs[:, :, 0] | (runs[:, :, 1] << 4)).reshape(n, 128)
    head = np.stack([d, dmin], axis=1).astype(np.float16).view(np.uint8)
    return np.concatenate([head, scales, qs], axis=1)


def pack_q6k(d: np.ndarray, sc: np.ndarray, q: np.ndarray) -> np.ndarray:
    """210-byte blocks: low 4 bits of 256 six-bit codes (128 bytes), high 2 bits (64), 16 int8
    scales of 16 values each, d (fp16). value = d * sc[sub] * (q - 32)."""
    n = len(d)
    q = q.astype(np.uint8).reshape(n, 2, 4, 32)  # [half][quarter][l] = value 128 * half + 32 * quarter + l
    q1, q2, q3, q4 = q[:, :, 0], q[:, :, 1], q[:, :, 2], q[:, :, 3]
    ql = np.concatenate([(q1 & 15) | ((q3 & 15) << 4), (q2 & 15) | ((q4 & 15) << 4)], axis=2).reshape(n, 128)
    qh = ((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)).reshape(n, 64)
    scales = sc.astype(np.int8).view(np.uint8)
    return np.concatenate([ql, qh, scales, d.astype(np.float16).view(np.uint8).reshape(n, 2)], axis=1)


def quantize_q4k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, the values they decode to): asymmetric 4-bit per 32 values, scales/mins on a 6-bit grid."""
    sub = x.reshape(-1, 8, 32).astype(np.float32)
    lo = np.minimum(sub.min(-1), 0)
    scale, low = (sub.max(-1) - lo) / 15, -lo
    d = (scale.max(-1) / 63).astype(np.float16).astype(np.float32)
    dmin = (low.max(-1) / 63).astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / np.where(d > 0, d, 1)[:, None]), 0, 63)
    m = np.clip(np.round(low / np.where(dmin > 0, dmin, 1)[:, None]), 0, 63)
    step, offset = d[:, None] * sc, dmin[:, None] * m
    q = np.clip(np.round((sub + offset[..., None]) / np.where(step > 0, step, 1)[..., None]), 0, 15)
    values = step[..., None] * q - offset[..., None]
    return pack_q4k(d, dmin, sc, m, q.reshape(-1, 256)), values.reshape(x.shape)


def quantize_q6k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(blocks, the values they decode to): symmetric 6-bit per 16 values, int8 scales."""
    sub = x.reshape(-1, 16, 16).astype(np.float32)
    scale = np.abs(sub).max(-1) / 31
    d = (scale.max(-1) / 127).astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / np.where(d > 0, d, 1)[:, None]), -128, 127)
    step = d[:, None] * sc
    q = np.clip(np.round(sub / np.where(step > 0, step, 1)[..., None]), -32, 31)
    values = step[..., None] * q
    return pack_q6k(d, sc, (q + 32).reshape(-1, 256)), values.reshape(x.shape)


def test_hand_built_q4k_block_decodes_as_the_format_says() -> None:
    sc = np.array([[1, 5, 17, 33, 63, 40, 20, 9]])  # six-bit values: the high bits are packed apart
    m = np.array([[0, 3, 16, 31, 62, 45, 7, 2]])
    q = (np.arange(256) * 7 % 16)[None, :]
    block = pack_q4k(np.array([0.5]), np.array([0.25]), sc, m, q)
    assert block.shape == (1, 144)
    expected = 0.5 * sc[0].repeat(32) * q[0] - 0.25 * m[0].repeat(32)
    got = gguf.quants.dequantize(block, Q.Q4_K).reshape(-1)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


def test_hand_built_q6k_block_decodes_as_the_format_says() -> None:
    sc = np.array([[-7, 3, 127, -128, 1, 0, 64, 15, 2, -1, 9, 100, 50, 33, 8, 21]])
    q = (np.arange(256) * 5 % 64)[None, :]
    block = pack_q6k(np.array([0.125]), sc, q)
    assert block.shape == (1, 210)
    expected = 0.125 * sc[0].repeat(16) * (q[0] - 32)
    got = gguf.quants.dequantize(block, Q.Q6_K).reshape(-1)
    np.testing.assert_array_equal(got, expected.astype(np.float32))


# ---- writing tiny GGUF files -------------------------------------------------------------------

PIECES = ["▁", "a", "e", "h", "l", "o", "t", "n", "m", "he", "ll", "llo", "▁the", "▁m", "an", "▁a", "▁he"]


def vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    """A Gemma-like sentencepiece vocabulary: specials, 256 byte tokens, turn markers, a few pieces."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [3, 3, 3, 2] + [6] * 256
    tokens += ["<start_of_turn>", "<end_of_turn>", *PIECES]
    types += [3, 3] + [1] * len(PIECES)
    scores = [0.0] * 262 + [-float(i) for i in range(len(PIECES))]
    filler = size - len(tokens)
    return tokens + [f"<unused{i}>" for i in range(filler)], scores + [0.0] * filler, types + [5] * filler


TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
)


def gemma_types(kind: str) -> dict[str, Q]:
    """Tensor types by GGUF name suffix; norms stay F32 as llama.cpp keeps 1-D tensors."""
    if kind == "Q4_K_M":  # llama.cpp's mix: Q4_K, with Q6_K for the embedding, attn_v and ffn_down
        return {"token_embd": Q.Q6_K, "attn_v": Q.Q6_K, "ffn_down": Q.Q6_K, "": Q.Q4_K}
    return {"": Q[kind]}


def encode(name: str, values: np.ndarray, types: dict[str, Q]) -> tuple[np.ndarray, Q, np.ndarray]:
    """(stored array, its type, the values it decodes to) for one tensor."""
    if values.ndim == 1:
        return values, Q.F32, values
    kind = next(t for key, t in types.items() if key in name)
    if kind == Q.Q4_K:
        blocks, decoded = quantize_q4k(values)
        return blocks.reshape(values.shape[0], -1), kind, decoded
    if kind == Q.Q6_K:
        blocks, decoded = quantize_q6k(values)
        return blocks.reshape(values.shape[0], -1), kind, decoded
    if kind == Q.F32:
        return values, kind, values
    stored = gguf.quants.quantize(values, kind)
    return stored, kind, gguf.quants.dequantize(stored, kind)


def write_gemma_gguf(
    path: Path, model: Any, kind: str = "F32", *, tokenizer: bool = True, meta: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """The model as llama.cpp's converter writes it (norms + 1, no lm_head when tied); returns the
    HF name -> values the file decodes to (norms as HF has them)."""
    config = model.config
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("tiny-gemma3")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["full_attention"]["rope_theta"])
    writer.add_sliding_window(config.sliding_window)
    full = config.rope_parameters["full_attention"]
    if full["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(full["factor"])
    for key, value in (meta or {}).items():
        getattr(writer, f"add_{key}")(value)
    if tokenizer:
        tokens, scores, types = vocabulary(config.vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_bos_token_id(2)
        writer.add_eos_token_id(1)
        writer.add_unk_token_id(3)
        writer.add_pad_token_id(0)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(False)
        writer.add_chat_template(TEMPLATE)
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, config.num_hidden_layers)
    types = gemma_types(kind)
    decoded: dict[str, np.ndarray] = {}
    for hf, tensor in model.state_dict().items():
        if hf == "lm_head.weight" and config.tie_word_embeddings:
            continue
        base, suffix = hf.rsplit(".", 1)
        name = f"{table.get_name(base)}.{suffix}"
        values = tensor.float().numpy()
        shift = np.float32(1.0) if hf.endswith("norm.weight") else np.float32(0.0)
        stored, kind_of, back = encode(name, values + shift, types)
        writer.add_tensor(name, stored, raw_dtype=kind_of)
        decoded[hf] = back - shift
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return decoded


def gguf_gemma(folder: Path, **overrides: Any) -> Any:
    """A tiny Gemma 3 transformers can load from GGUF: it assumes query_pre_attn_scalar 256, the
    default window pattern and no RoPE scaling, so head_dim 256, six layers (five sliding) and no
    scaling; hidden 256 so that every row holds whole K-quant blocks."""
    base = {
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "rope_scaling": None,
    }
    return tiny_gemma(folder, seed=7, **(base | overrides))


@torch.no_grad()
def transformers_gguf_logits(path: Path, prompt: list[int]) -> tuple[Any, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return model, model(torch.tensor([prompt])).logits[0]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLAWDBOT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gguf"


@pytest.mark.parametrize("kind", ["F32", "F16", "BF16", "Q8_0", "Q4_K_M"])
def test_gemma3_file_gives_transformers_logits(kind: str, tmp_path: Path, cache: Path) -> None:
    source = gguf_gemma(tmp_path / "src")
    path = tmp_path / f"tiny-{kind}.gguf"
    decoded = write_gemma_gguf(path, source, kind)
    folder = ours.hf_folder(path)
    assert folder.parent.parent == cache and folder.name == f"tiny-{kind}"

    # The weights are exactly what the file decodes to (Q4_K / Q6_K: what our encoder says they are).
    model, _ = load_model(path)
    params = dict(model.named_parameters())
    q_rows = source.config.num_attention_heads * source.config.head_dim
    np.testing.assert_allclose(
        params["layers.0.self_attn.qkv_proj.weight"][:q_rows].numpy(),
        decoded["model.layers.0.self_attn.q_proj.weight"],
        rtol=1e-6,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        params["layers.1.post_feedforward_layernorm.weight"].numpy(),
        decoded["model.layers.1.post_feedforward_layernorm.weight"],
        atol=1e-6,
    )

    prompt = prompt_of(40)
    _, reference = transformers_gguf_logits(path, prompt)
    got = prefill_logits(folder, prompt, [40])
    assert (got - reference).abs().max().item() <= TOL
    if kind == "F32":
        assert (got - reference_logits(source, prompt)).abs().max().item() <= TOL


def test_engine_greedy_tokens_from_a_q8_file_equal_transformers(tmp_path: Path, cache: Path) -> None:
    from clawdbot.services.inference.engine import Engine, EngineConfig
    from clawdbot.services.inference.sequence import SamplingParams, Sequence

    path = tmp_path / "tiny.gguf"
    write_gemma_gguf(path, gguf_gemma(tmp_path / "src"), "Q8_0")
    prompt = prompt_of(12, seed=4)
    reference, _ = transformers_gguf_logits(path, prompt)
    model, config = load_model(path)
    options = EngineConfig(block_size=4, num_blocks=128, max_num_batched_tokens=16)
    engine = Engine(model, config, options, torch.device("cpu"), torch.float32)
    seq = Sequence("g", list(prompt), SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True))
    engine.scheduler.add(seq)
    while not seq.is_finished:
        engine.step()
    assert seq.output_ids == reference_greedy(reference, prompt, 24)


def test_config_comes_from_the_metadata(tmp_path: Path, cache: Path) -> None:
    """RoPE scaling (linear x8), the local base, the window pattern, the query scale and the
    end-of-turn EOS; and the F32 file of such a model still gives the source model's logits."""
    source = tiny_gemma(tmp_path / "src", seed=8)  # head_dim 32, query_pre_attn_scalar 24, linear x8
    path = tmp_path / "tiny.gguf"
    write_gemma_gguf(path, source, "F32", meta={"rope_freq_base_swa": 10000.0})
    folder = ours.hf_folder(path)
    config = load_config(folder)
    assert config.architecture == "gemma3_text" and config.layer_windows == (8, 8, 8, 8, 8, 0)
    assert (config.rope.kind, config.rope.factor, config.rope.theta) == ("linear", 8.0, 1e6)
    assert config.local_rope is not None and config.local_rope.theta == 1e4
    assert config.head_dim == 32 and config.rms_norm_eps == 1e-6 and config.tie_word_embeddings
    # llama.cpp's rule for Gemma 3: the scale is head_dim's; the source's 24 is not in the file.
    assert config.attention_scale == 32**-0.5
    assert config.eos_token_ids == (1, 261)  # <eos>, <end_of_turn>
    raw = json.loads((folder / "config.json").read_text())
    raw["query_pre_attn_scalar"] = 24
    (folder / "config.json").write_text(json.dumps(raw))
    prompt = prompt_of(40)
    assert (prefill_logits(folder, prompt, [40]) - reference_logits(source, prompt)).abs().max().item() <= TOL


@pytest.mark.parametrize(
    ("meta", "layers", "expected"),
    [
        ({}, 4, ["sliding_attention"] * 4),
        ({"sliding_window_pattern": 2}, 4, ["sliding_attention", "full_attention"] * 2),
        ({"sliding_window_pattern": [True, False, False, True]}, 4, None),
    ],
)
def test_window_pattern_follows_llama_cpp(
    meta: dict[str, Any], layers: int, expected: list[str] | None, tmp_path: Path
) -> None:
    path = tmp_path / "tiny.gguf"
    model = tiny_gemma(tmp_path / "src", num_hidden_layers=layers)
    write_gemma_gguf(path, model, tokenizer=False, meta=meta)
    config = ours.gguf_config(ours.GGUFFile(path))
    if expected is None:
        expected = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    assert config["layer_types"] == expected


def test_27b_shape_scales_queries_by_hidden_over_heads(tmp_path: Path) -> None:
    """llama.cpp (and Gemma's reference) scale the 27B's queries by (hidden / heads)**-0.5."""
    path = tmp_path / "meta.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma3")
    for key, value in [
        ("context_length", 128),
        ("embedding_length", 5376),
        ("block_count", 62),
        ("feed_forward_length", 64),
        ("head_count", 32),
        ("head_count_kv", 16),
        ("key_length", 128),
        ("sliding_window", 1024),
    ]:
        getattr(writer, f"add_{key}")(value)
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config = ours.gguf_config(ours.GGUFFile(path))
    assert config["query_pre_attn_scalar"] == 168 and config["head_dim"] == 128 and config["vocab_size"] == 3


def test_tokenizer_folder_serves_the_tokenizer_service(tmp_path: Path, cache: Path) -> None:
    from transformers import AutoTokenizer

    from clawdbot.services.tokenizer.tokenizer import TextTokenizer

    path = tmp_path / "tiny.gguf"
    write_gemma_gguf(path, tiny_gemma(tmp_path / "src"))
    folder = ours.hf_folder(path)
    assert (folder / "tokenizer.json").exists()
    direct = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    service = TextTokenizer(folder)
    text = "hello the man"
    assert service.hf.encode(text) == direct.encode(text)
    assert service.hf.encode(text)[0] == 2  # <bos>
    assert service.has_chat_template
    assert "<start_of_turn>user\nhi<end_of_turn>" in service.hf.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False
    )


def test_the_folder_is_converted_once_and_redone_when_the_file_changes(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny.gguf"
    write_gemma_gguf(path, tiny_gemma(tmp_path / "src"), tokenizer=False)
    first = ours.hf_folder(path)
    calls: list[Path] = []
    convert = ours.convert_gguf
    monkeypatch.setattr(ours, "convert_gguf", lambda *a, **k: calls.append(Path(a[0])) or convert(*a, **k))
    assert ours.hf_folder(path) == first and calls == []
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = ours.hf_folder(path)
    assert second != first and calls == [path.resolve()]
    assert not list(second.parent.glob(".*partial"))


def test_cli_prints_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.gguf"
    write_gemma_gguf(path, tiny_gemma(tmp_path / "src"), tokenizer=False)
    assert ours.main([str(path), "--out", str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert load_config(tmp_path / "out").torch_dtype == "bfloat16"


# ---- other families and errors --------------------------------------------------------------------


def llama_cpp_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llama_and_qwen2_files_give_the_source_logits(family: str, tmp_path: Path, cache: Path) -> None:
    # llama.cpp applies no sliding window to these architectures (a GGUF has no key for Qwen2's).
    source = tiny_model(
        family, tmp_path / "src", seed=9, **({"use_sliding_window": False} if family == "qwen2" else {})
    )
    config = source.config
    path = tmp_path / f"{family}.gguf"
    writer = gguf.GGUFWriter(str(path), family)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_eos_token_id(2)
    arch = gguf.MODEL_ARCH.LLAMA if family == "llama" else gguf.MODEL_ARCH.QWEN2
    table = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    for hf, tensor in source.state_dict().items():
        base, suffix = hf.rsplit(".", 1)
        name = f"{table.get_name(base)}.{suffix}"
        values = tensor.float().numpy()
        if family == "llama" and name.endswith("attn_q.weight"):
            values = llama_cpp_permute(values, config.num_attention_heads)
        elif family == "llama" and name.endswith("attn_k.weight"):
            values = llama_cpp_permute(values, config.num_key_value_heads)
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    prompt = torch.randint(3, 512, (24,), generator=torch.Generator().manual_seed(0)).tolist()
    got = prefill_logits(ours.hf_folder(path), prompt, [24])
    assert (got - reference_logits(source, prompt)).abs().max().item() <= TOL


def test_unsupported_architecture_and_unknown_tensors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(path), "phi3")
    writer.add_tensor("token_embd.weight", np.zeros((3, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InvalidArgument) as err:
        ours.convert_gguf(path, tmp_path / "out")
    assert err.value.field == "gguf:general.architecture"

    path = tmp_path / "extra.gguf"
    model = tiny_gemma(tmp_path / "src", num_hidden_layers=1, layer_types=["full_attention"])
    write_gemma_gguf(path, model, tokenizer=False)
    reader = ours.GGUFFile(path)
    reader.tensors["blk.0.mystery.weight"] = reader.tensors["output_norm.weight"]
    with pytest.raises(InvalidArgument) as err:
        list(ours.gguf_tensors(reader, ours.gguf_config(reader)))
    assert err.value.field == "gguf:blk.0.mystery.weight"
