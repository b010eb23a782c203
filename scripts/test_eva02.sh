#!/usr/bin/env bash
# Runs the eva02 tests in their own environment, .venv-timm. EVA02 comes from timm, timm needs torchvision,
# and torchvision's wheels only import next to the CUDA build of torch (it runs on a CPU too); that build is
# a download of several GB, so it lives here and not in .venv or CI. Built once; rebuilt when pyproject.toml
# or this script changes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-timm
STAMP=$VENV/.fishertune-setup
WANT=$(cat pyproject.toml scripts/test_eva02.sh | sha256sum | cut -d' ' -f1)
if [[ ! -f $STAMP || $(cat $STAMP) != "$WANT" ]]; then
    echo "[eva02] creating $VENV (first run downloads several GB: the CUDA build of torch)"
    [[ -d $VENV ]] || $PY -m venv $VENV
    PIP=($VENV/bin/pip install -q --disable-pip-version-check)
    "${PIP[@]}" torch==2.14.1 torchvision==0.29.1 timm==1.0.31
    "${PIP[@]}" -e ".[dev,timm]"
    echo "$WANT" > $STAMP
fi
$VENV/bin/python -c "import torch, torchvision, timm
print(f'[eva02] torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}')"
# Every test with eva02 in its name: the backbone's own, the eva02 cases of the registry-wide segmentor and
# tuner tests, and a train -> eval run through the command line.
$VENV/bin/python -m pytest -q -rs -k eva02 tests "$@"
