"""Write a quantized model folder that loads without re-quantizing (`clawdbot quantize SRC DST`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from clawdbot.services.inference.model.loader import load_model
from clawdbot.services.inference.quant import QUANT_METHOD

# Files a model folder may carry besides weights; copied as they are (the tokenizer service reads them).
PASSTHROUGH = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def quantize_folder(
    src: str | Path, dst: str | Path, *, group_size: int = 128, lm_head: bool = False, dtype: str = "bfloat16"
) -> dict[str, int | str]:
    """Quantize `src` to INT4 (16-bit embeddings/norms, 16-bit lm_head unless asked) into `dst`."""
    src, dst = Path(src), Path(dst)
    model, config = load_model(
        src, dtype=dtype, quantization="int4", lm_head="int4" if lm_head else "16bit", group_size=group_size
    )
    dst.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if config.tie_word_embeddings and not lm_head:
        state.pop("lm_head.weight", None)  # the loader ties it back to the embeddings
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt", "quant_method": QUANT_METHOD})
    raw = json.loads((src / "config.json").read_text(encoding="utf-8"))
    scale_dtype = next(
        (str(t.dtype).removeprefix("torch.") for n, t in state.items() if n.endswith(".scales")), "float16"
    )
    raw["quantization_config"] = {
        "quant_method": QUANT_METHOD,
        "bits": 4,
        "group_size": group_size,
        "lm_head": lm_head,
        "scale_dtype": scale_dtype,
        "symmetric": False,
    }
    raw["dtype"] = dtype
    (dst / "config.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    for name in PASSTHROUGH:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    return {"source_bytes": folder_bytes(src), "quantized_bytes": folder_bytes(dst), "dst": str(dst)}
