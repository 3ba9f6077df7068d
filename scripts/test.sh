#!/usr/bin/env bash
# Builds sdonnx and runs the whole test suite with ctest. Tests read fixtures
# from ../shared/fixtures (or $SDONNX_FIXTURES) and write only to temporary
# folders.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/build.sh"
cd "$repo_root/build"
ctest --output-on-failure -j 2 "$@"
