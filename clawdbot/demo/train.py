"""Train the shop's models: the small from-scratch decoder, or a LoRA adapter on a pretrained one.

    python -m clawdbot.demo.train --tokens runs/tokens.npz --out runs/shop-assistant --steps 2500
    python -m clawdbot.demo.train --tokens runs/gemma.npz --init BASE_DIR --lora-rank 32 --out runs/sg

Plain PyTorch: the model class is `transformers`' (Mistral for the small model, whatever the
`--init` folder's config names otherwise: the reference architectures our loader reproduces), the
loop is ours (AdamW, warmup + cosine, bf16 autocast on CUDA, gradient clipping), batches are
length-bucketed and padded to a token budget. Fixed seeds. With `--lora-rank`, `peft` wraps the
attention and MLP projections and only the adapter learns; the folder written is peft's adapter
(`adapter_config.json`, `adapter_model.safetensors`), which `services.inference.model.adapter`
merges into the base at start-up. Otherwise it writes a Hugging Face folder (config, bf16
safetensors, generation config, the bundled tokenizer). Both get `train-report.json` with the
loss curve. Runs on the GPU machine in minutes, on a CPU far more slowly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedModel

# The bundled tokenizer (the same folder services.tokenizer.assets names); a path, so this script runs
# on a machine where the package is not installed.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "shop-assistant"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
IM_END, ENDOFTEXT = 8185, 8183
# The projections a LoRA adapter wraps: every linear layer of attention and MLP (Llama/Gemma names).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

PRESETS: dict[str, dict[str, Any]] = {
    # ~8.4 M parameters, 16.8 MB in bf16 with tied embeddings.
    "demo": {
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 8,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "sliding_window": 1024,
        "max_position_embeddings": 4096,
    },
    # For tests: trains a few steps on a CPU in seconds.
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "sliding_window": 256,
        "max_position_embeddings": 2048,
    },
}


# A plain keyword in transformers 4.x and 5.x alike (5.x folds it into rope_parameters).
ROPE: dict[str, Any] = {"rope_theta": 10000.0}


def model_config(preset: str, vocab_size: int = 8192) -> MistralConfig:
    return MistralConfig(
        vocab_size=vocab_size,
        head_dim=PRESETS[preset]["hidden_size"] // PRESETS[preset]["num_attention_heads"],
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=IM_END,
        pad_token_id=ENDOFTEXT,
        **PRESETS[preset],
        **ROPE,
    )


def load_tokens(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    data = np.load(path)
    ids, learn, offsets = data["ids"], data["learn"], data["offsets"]
    return [(ids[a:b].astype(np.int64), learn[a:b]) for a, b in itertools.pairwise(offsets)]


def batches(
    samples: Sequence[tuple[np.ndarray, np.ndarray]], token_budget: int, rng: random.Random
) -> Iterator[list[int]]:
    """Endless shuffled batches of sample indices of similar length, padded size <= token_budget."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i][0]))
    while True:
        groups: list[list[int]] = []
        current: list[int] = []
        for i in order:
            longest = max([len(samples[j][0]) for j in current] + [len(samples[i][0])])
            if current and longest * (len(current) + 1) > token_budget:
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        rng.shuffle(groups)
        yield from groups


def collate(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    index: list[int],
    device: torch.device,
    pad_id: int = ENDOFTEXT,
) -> dict[str, torch.Tensor]:
    length = max(len(samples[i][0]) for i in index)
    ids = torch.full((len(index), length), pad_id, dtype=torch.long)
    labels = torch.full((len(index), length), -100, dtype=torch.long)
    mask = torch.zeros((len(index), length), dtype=torch.long)
    for row, i in enumerate(index):
        seq, learn = samples[i]
        n = len(seq)
        ids[row, :n] = torch.from_numpy(seq)
        mask[row, :n] = 1
        target = torch.from_numpy(np.where(learn, seq, -100))
        labels[row, : n - 1] = target[1:]  # predict token t+1 at position t
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def loss_of(model: PreTrainedModel, batch: dict[str, torch.Tensor], autocast: bool) -> torch.Tensor:
    """Cross-entropy on the learned positions only: the vocabulary projection runs on ~5% of tokens."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        hidden = model.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        learned = batch["labels"] != -100
        logits = model.lm_head(hidden[learned])
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"][learned])


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    device = torch.device(args.device)
    samples = load_tokens(args.tokens)
    held = set(rng.sample(range(len(samples)), max(1, len(samples) // 50)))
    train_set = [s for i, s in enumerate(samples) if i not in held]
    eval_set = [s for i, s in enumerate(samples) if i in held]
    model: Any = (
        AutoModelForCausalLM.from_pretrained(str(args.init), dtype=torch.float32)
        if getattr(args, "init", None)
        else MistralForCausalLM(model_config(args.preset))
    )
    model.to(device)
    model.config._attn_implementation = "sdpa"
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else ENDOFTEXT
    core = model  # the transformers model whose .model and .lm_head the loss calls
    lora_rank = getattr(args, "lora_rank", 0)
    if lora_rank:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
        )
        model = get_peft_model(model, lora)
        core = model.get_base_model()
    params = sum(p.numel() for p in model.parameters())
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    weight_decay = 0.0 if lora_rank else 0.1
    decay = [p for n, p in trainable if p.dim() >= 2]
    no_decay = [p for n, p in trainable if p.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    warmup = max(1, args.steps // 25)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if args.max_seconds:  # a time budget ends the schedule too, so a cut run still cools down
            progress = max(progress, min(1.0, (time.perf_counter() - started) / args.max_seconds))
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    autocast = device.type == "cuda"
    total = args.steps
    stream = batches(train_set, args.batch_tokens, rng)
    eval_batches = list(batches(eval_set, args.batch_tokens, random.Random(0)).__next__() for _ in range(1))
    curve: list[dict[str, float]] = []
    started = time.perf_counter()
    step = 0
    while step < total:
        if args.max_seconds and time.perf_counter() - started > args.max_seconds:
            break  # the schedule has cooled down by now (lr_at reads the clock too)
        for group in optim.param_groups:
            group["lr"] = lr_at(step)
        loss = loss_of(core, collate(train_set, next(stream), device, pad_id), autocast)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if step % args.log_every == 0 or step == total - 1:
            point = {
                "step": step,
                "loss": round(loss.item(), 4),
                "lr": lr_at(step),
                "seconds": round(time.perf_counter() - started, 1),
            }
            if step % (args.log_every * 5) == 0 or step == total - 1:
                model.eval()
                with torch.no_grad():
                    point["eval_loss"] = round(
                        float(
                            sum(
                                loss_of(core, collate(eval_set, g, device, pad_id), autocast)
                                for g in eval_batches
                            )
                            / len(eval_batches)
                        ),
                        4,
                    )
                model.train()
            curve.append(point)
            print(json.dumps(point), file=sys.stderr, flush=True)
        step += 1
    return {
        "steps_run": step,
        "model": model,
        "params": params,
        "trainable_params": sum(p.numel() for _, p in trainable),
        "curve": curve,
        "seconds": round(time.perf_counter() - started, 1),
        "train_samples": len(train_set),
        "eval_samples": len(eval_set),
    }


def save(model: Any, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):  # an adapter: its own two files, bf16 (rank 32 on 270M: ~15 MB)
        model.to(torch.bfloat16)
        model.save_pretrained(str(out), safe_serialization=True)
        return
    # Shards under 10 MB: git-friendly, and the GPU machine returns files of at most 16 MiB.
    model.to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size="10MB")
    for name in TOKENIZER_FILES:
        shutil.copy(DEFAULT_MODEL_DIR / name, out / name)
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [IM_END, ENDOFTEXT], "pad_token_id": ENDOFTEXT}, indent=2) + "\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=Path, required=True, help="npz from clawdbot.demo.tokens")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this model folder (fine-tune) instead of random weights",
    )
    parser.add_argument(
        "--lora-rank", type=int, default=0, help="train a LoRA adapter of this rank (0: every weight)"
    )
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-tokens", type=int, default=65536)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=0,
        help="wall-clock stop (0: none); the schedule ends at --steps or this, whichever comes first",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    result = train(args)
    save(result.pop("model"), args.out)
    report = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        **{k: v for k, v in vars(args).items() if k != "tokens"},
        "tokens": str(args.tokens),
        **result,
    }
    (args.out / "train-report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, default=str))


if __name__ == "__main__":
    main()
