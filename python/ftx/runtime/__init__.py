"""What ftx computes on: the BLAS bound to MLX on Linux, the device, and the CPU stream plan.

Nothing here imports MLX at module level: the BLAS must be chosen before MLX loads.
"""
