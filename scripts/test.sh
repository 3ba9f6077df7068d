#!/usr/bin/env bash
# Builds sdonnx and runs the whole test suite with ctest. Tests read fixtures
# from ../shared/fixtures (or $SDONNX_FIXTURES) and write only to temporary
# folders. With SDONNX_SANITIZERS=1 (as .ci/run sets it), the suite then runs
# a second time under AddressSanitizer and UBSan (scripts/test-sanitizers.sh).
# Arguments are passed to ctest.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo_root/scripts/build.sh"
(cd "$repo_root/build" && ctest --output-on-failure -j 2 "$@")
if [[ "${SDONNX_SANITIZERS:-0}" == "1" ]]; then
  bash "$repo_root/scripts/test-sanitizers.sh" "$@"
fi
