"""The tiny-model fixtures (``model_fixtures``) for the fuse tests and the consumers' tests."""

from model_fixtures import fused, lora_run, make_config, prepared, tiny_llama

__all__ = ["fused", "lora_run", "make_config", "prepared", "tiny_llama"]
