"""The bundled demo model: its training corpus, its training script and its evaluation set.

`corpus.py` turns the example shop (`examples/shop/`) into customer-service conversations whose
prompts are built exactly as the mesh builds them (real plugin context, the gateway's system
prompt, the chat template); `train.py` trains a small Mistral-architecture decoder on them.
"""

from pathlib import Path

# The eval set (`eval.jsonl`, phrasings not in the training corpus) through the whole mesh on the
# shipped INT4 model must score at least this; docs/demo-model.md records the measured score.
EVAL_SET = Path(__file__).resolve().parent / "eval.jsonl"
EVAL_BAR = 0.55
EVAL_ORDER_STATUS_BAR = 0.85
