"""The tiny-model fixtures (``model_fixtures``) for the evaluate tests."""

from model_fixtures import make_config, prepared, tiny_llama

__all__ = ["make_config", "prepared", "tiny_llama"]
