#!/usr/bin/env bash
# The main job on a built-in default: builds sdonnx, then synthesizes a small
# SD 1.x checkpoint, converts it to ONNX and runs the four models.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/build.sh"
"$repo_root/build/sdonnx" demo "$@"
