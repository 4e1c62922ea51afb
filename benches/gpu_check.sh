#!/usr/bin/env bash
# The NVIDIA GPU check, one script in under 5 minutes: installs ftx's CUDA extra (MLX's CUDA
# backend) into a fresh venv, trains SmolLM2-135M with ftx and with mlx_lm.lora on the same data
# and settings, and prints both trained tokens/s and their ratio (JSON in .benchmarks/data).
# Usage: benches/gpu_check.sh [WHEEL]   (default: the wheel in dist/, built by `make wheel`)
# CUDA=cuda13 picks MLX's CUDA 13 wheels (default cuda, i.e. CUDA 12). Needs ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
wheel=${1:-$(ls dist/ftx-*.whl | head -n 1)}
venv=${VENV:-.venv-cuda}
python3 -m venv "$venv"
"$venv/bin/pip" install -q "${wheel}[${CUDA:-cuda}]" pytest
"$venv/bin/python" -c "import mlx.core as mx; assert mx.default_device() == mx.gpu, 'MLX sees no GPU'"
"$venv/bin/ftx" doctor
cd benches
timeout 270 "../$venv/bin/python" -m pytest test_train_throughput.py -k on_the_gpu -s -q \
    -p no:cacheprovider
