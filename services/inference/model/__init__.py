"""Our decoder for the Llama / Mistral / Qwen2 families, and its loader."""
