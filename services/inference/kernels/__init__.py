"""GPU kernels for the inference engine (Triton, imported lazily: this package imports without it)."""

from clawdbot.services.inference.kernels.paged_attention import triton_available, triton_paged_attention

__all__ = ["triton_available", "triton_paged_attention"]
