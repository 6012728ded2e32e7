"""services/tokenizer."""
