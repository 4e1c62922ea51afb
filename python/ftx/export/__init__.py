"""What ``ftx fuse`` writes: fused MLX models, GGUF files and PEFT adapters."""
