#!/usr/bin/env bash
# Sets up the environment if needed, then runs the embedded DGSS demo (quick mode).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fishertune demo --out "${1:-runs/demo}" "${@:2}"
