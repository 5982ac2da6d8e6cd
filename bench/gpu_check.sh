#!/usr/bin/env bash
# The vLLM paths at a real model's size on one CUDA GPU, in one go: install (make install-dev takes PyTorch's
# CUDA build and the `gpu` extra's vLLM where nvidia-smi exists), then bench/gpu_check.py (its --help says
# what it measures; arguments are passed on). Prints the figures; asserts nothing.
#
# With 2 or more GPUs it then runs tests/test_train_distributed.py on 2 GPUs (NCCL) against 1: the same
# GRPO / SFT / KTO comparisons, single-writer checks and SIGTERM resume that run on 2 CPU processes
# (gloo) in CI. That part is a test: its result is pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."
make install-dev
.venv/bin/python bench/gpu_check.py "$@"
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)
if [ "${gpus:-0}" -ge 2 ]; then
  echo "== tests/test_train_distributed.py on 2 GPUs (NCCL)"
  KNOBSWEEP_TEST_GPUS=2 exec .venv/bin/pytest tests/test_train_distributed.py -q -p no:randomly
fi
echo "== multi-GPU part skipped: ${gpus:-0} GPU(s) here, it needs 2"
