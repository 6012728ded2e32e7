"""Dense sentence embeddings from a local model folder (mean pooling, L2-normalised), for retrieval.

Imported only when a retrieval plugin configures `dense:`, so torch loads only where it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DenseIndex:
    def __init__(self, model_dir: Path, max_length: int = 256) -> None:
        if not (model_dir / "config.json").is_file():
            raise ValueError(f"{model_dir} is not a model folder (no config.json)")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model: Any = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        self.max_length = max_length
        self.matrix: Any = None

    def embed(self, texts: list[str]) -> Any:
        torch = self._torch
        with torch.inference_mode():
            batch = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1)

    def index(self, texts: list[str], batch_size: int = 32) -> None:
        parts = [self.embed(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        self.matrix = self._torch.cat(parts) if parts else None

    def similarities(self, query: str) -> list[float]:
        if self.matrix is None:
            return []
        return [float(x) for x in (self.matrix @ self.embed([query])[0]).tolist()]
