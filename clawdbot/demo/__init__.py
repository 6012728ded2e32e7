"""The bundled demo model: its training corpus, its training script and its evaluation set.

`corpus.py` turns the example shop (`examples/shop/`) into customer-service conversations whose
prompts are built exactly as the mesh builds them (real plugin context, the gateway's system
prompt, the chat template); `train.py` trains a small Mistral-architecture decoder on them.
"""

from pathlib import Path

# The first eval set (`eval.jsonl`, 47 conversations) and the held-out set written apart from the
# training generator (`evals/shop-eval.jsonl` in the repository, 402 conversations; evals/README.md).
# CI runs every EVAL_SUBSET_STEP-th conversation of the held-out set on a fresh mesh and fails below
# EVAL_BAR; docs/demo-model.md records the full scores.
EVAL_SET = Path(__file__).resolve().parent / "eval.jsonl"
EVAL_BAR = 0.80
EVAL_ORDER_STATUS_BAR = 0.85
EVAL_SUBSET_STEP = 4
# The share of replies the gateway's fallback replaced: the target is 15%; the shipped model
# (trained before the corpus gained item lists and intent replies) measures ~17-19%, so CI holds the
# line here until the model is retrained on the current corpus (docs/demo-model.md).
EVAL_REPLACED_BAR = 0.25
