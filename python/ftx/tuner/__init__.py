"""LoRA, DoRA and full fine-tuning on MLX.

Importing this package imports nothing heavy: the modules that need MLX (model, forward, optim,
trainer, memory) import it themselves, and ``blas`` must run before any of them.
"""
