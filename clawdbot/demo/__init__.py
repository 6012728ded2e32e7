"""The bundled demo model: its training corpus, its training script and its evaluation set.

`corpus.py` turns the example shop (`examples/shop/`) into customer-service conversations whose
prompts are built exactly as the mesh builds them (real plugin context, the gateway's system
prompt, the chat template); `train.py` trains a small Mistral-architecture decoder on them.
"""
