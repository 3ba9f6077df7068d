#!/usr/bin/env bash
# Installs the dependencies (scripts/setup.sh) and builds sdonnx in build/.
# Extra arguments go to cmake's configure step, e.g. -DONNXRUNTIME_ROOT=...
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

uses_own_ort=0
for arg in "$@"; do
  [[ "$arg" == -DONNXRUNTIME_ROOT=* ]] && uses_own_ort=1
done
if ((uses_own_ort)); then
  SDONNX_SKIP_ORT=1 bash scripts/setup.sh
else
  bash scripts/setup.sh
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$(nproc)"
