#!/usr/bin/env bash
# The vLLM paths at a real model's size on one CUDA GPU, in one go: install (make install-dev takes PyTorch's
# CUDA build and the `gpu` extra's vLLM where nvidia-smi exists), then bench/gpu_check.py (its --help says
# what it measures; arguments are passed on). Prints the figures; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
make install-dev
exec .venv/bin/python bench/gpu_check.py "$@"
