#!/usr/bin/env bash
# Builds sdonnx with AddressSanitizer and UndefinedBehaviorSanitizer in
# build-asan/ and runs the whole test suite under them. Leaks inside the
# prebuilt ONNX Runtime library are suppressed (tests/lsan.supp).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
bash scripts/setup.sh
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DSDONNX_SANITIZE=ON \
  -DSDONNX_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-asan -j "$(nproc)"
export LSAN_OPTIONS="suppressions=$repo_root/tests/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1"
cd build-asan
ctest --output-on-failure -j 2 "$@"
