"""The tiny-model fixtures (``model_fixtures``) for the chat and generate tests: the model, a run
folder with adapters and its fused model."""

from model_fixtures import fused, lora_run, tiny_llama

__all__ = ["fused", "lora_run", "tiny_llama"]
