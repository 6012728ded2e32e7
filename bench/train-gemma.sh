#!/usr/bin/env bash
# The GPU machine's side of the shop model's fine-tune (docs/demo-model.md says how to run it):
# reassemble the Gemma 3 270M GGUF carried in pieces (.gg/p*), convert it to an HF folder with our
# converter, train a LoRA adapter on the tokenized corpus, score it greedily on dev prompts, and put
# the adapter and reports in $OUT.
#   bash bench/train-gemma.sh TOKENS.npz DEV.jsonl [train.py options...]
set -u
: "${OUT:?OUT names the folder whose files come back}"
tokens=$1 dev=$2
shift 2
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start))s] $*" | tee -a "$OUT/log.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
for d in services gateway shared examples; do ln -sfn "../$d" "clawdbot/$d"; done
cat .gg/p* >/tmp/base.gguf
echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  /tmp/base.gguf" | sha256sum -c - >>"$OUT/log.txt" 2>&1 || exit 1
python3 -m clawdbot.services.inference.model.gguf /tmp/base.gguf --out /tmp/base >>"$OUT/log.txt" 2>&1 || exit 1
stamp converted
python3 -m clawdbot.demo.train --tokens "$tokens" --init /tmp/base --out /tmp/adapter "$@" 2>"$OUT/train.log" | tail -c 3000 >>"$OUT/log.txt"
stamp trained
cp /tmp/adapter/adapter_config.json /tmp/adapter/adapter_model.safetensors /tmp/adapter/train-report.json "$OUT/"
python3 -m clawdbot.demo.check --model /tmp/base --adapter /tmp/adapter --dev "$dev" --limit "${CHECK_LIMIT:-392}" --batch 64 \
  >"$OUT/check.json" 2>"$OUT/check-examples.json"
stamp checked
