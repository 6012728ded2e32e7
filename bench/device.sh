#!/usr/bin/env bash
# The GPU machine's side of a device run: install the carried wheels, then run each stage given, in
# order, copying its results to $OUT as soon as it ends (a call cut at its time limit still returns
# the stages before). A stage is `pytest` (the engine's GPU tests), `pytest-all` (every `gpu` test)
# or a comma list of bench.gpu sections.
#
# Here, before the call (python 3.12 wheels for x86-64; both paths are git-ignored):
#   make protos
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl -r bench/device-wheels.txt
# Then the device call, carrying `clawdbot/v1` and `.whl`:
#   bash bench/device.sh grpc correctness,ours,core,hf pytest long
set -u
: "${OUT:?OUT names the folder whose files come back}"
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start))s] $*" | tee -a "$OUT/log.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
# The installed layout's namespace (setup.py maps these folders under clawdbot/).
for d in services gateway shared examples; do ln -sfn "../$d" "clawdbot/$d"; done
{
  nvidia-smi -L
  nproc
  python3 -c "import torch, transformers, triton, grpc, uvloop; print(torch.__version__, transformers.__version__, triton.__version__, grpc.__version__, uvloop.__version__)"
} >"$OUT/env.txt" 2>&1
stamp installed
for stage in "$@"; do
  case "$stage" in
    pytest) python3 -m pytest -m gpu -q -p no:cacheprovider tests/unit/inference/test_gpu.py >"$OUT/pytest.txt" 2>&1 ;;
    pytest-all) python3 -m pytest -m gpu -q -p no:cacheprovider tests/unit/inference/ >"$OUT/pytest-all.txt" 2>&1 ;;
    *)
      name=${stage//,/-}
      mkdir -p "/tmp/bench/$name"
      python3 -m bench.gpu --sections "$stage" --out "/tmp/bench/$name/gpu.json" >"/tmp/bench/$name.log" 2>&1
      cp "/tmp/bench/$name/gpu.json" "$OUT/$name.json"
      tail -c 1500 "/tmp/bench/$name.log" >>"$OUT/log.txt"
      ;;
  esac
  stamp "$stage done"
done
