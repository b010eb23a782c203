#!/usr/bin/env bash
# GPU check, not part of CI: the CUDA paths (bf16/fp16 autocast, activation checkpointing, DDP over NCCL
# when two or more GPUs are present) and the cost tables on a ViT-L/14-shaped model with random weights at
# 512 px. Prints the same ratio tables as the CPU benchmarks, for a GPU column of
# docs/performance.md. Run from a clone after scripts/setup.sh, with a CUDA build of torch:
#   bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
'error: scripts/gpu_check.sh needs a CUDA GPU and a CUDA build of torch (torch.cuda.is_available() is false)')"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
cd benchmarks

echo "== 1. CUDA paths: bf16, fp16, activation checkpointing (ViT-L/14 shape, 512 px)"
"$PY" cuda_paths.py --crop 512

echo "== 2. DDP over NCCL"
if [ "$GPUS" -ge 2 ]; then
  (cd .. && "$PY" -m pytest -q -p no:cacheprovider tests/cli/test_resume_and_ddp.py -k two_process)
else
  echo "one GPU: DDP over NCCL needs two; not run"
fi

echo "== 3. training cost per phase, ratios to full fine-tuning (ViT-L/14 shape, 512 px, batch 4)"
"$PY" train_cost.py --large --crop 512 --batch 4 --steps 10 --update-every 5 --repeats 2

echo "== 4. peak memory, ratios to full fine-tuning (ViT-L/14 shape, 512 px, batch 4)"
"$PY" train_memory.py --large --crop 512 --batch 4 --steps 3 --update-every 2

echo "== 5. sliding-window inference, windows per second (1024x2048 image, 512 px windows)"
"$PY" model_speed.py --windows --window-image 1024 2048 --crop 512 --reps 3
