#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer and UBSan) in
# build-fuzz/ and runs each for SECONDS_PER_TARGET seconds (default 300), one
# after another on one core. Seed corpora are made from the fixtures in a
# temporary folder. The corpus each target grows is kept in
# build-fuzz/corpus/ (or $SDONNX_FUZZ_CORPUS), so a later run continues from
# it. Inputs that crash a target are kept in fuzz-crashes/ (or
# $SDONNX_FUZZ_CRASHES), with each target's log; the script exits non-zero if
# any target found a crash.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-300}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(fuzz_safetensors fuzz_pickle fuzz_torch_checkpoint fuzz_onnx_file fuzz_tokenizer
           fuzz_prompt)
fi
fixtures="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}"
crashes="$(realpath -m "${SDONNX_FUZZ_CRASHES:-$repo_root/fuzz-crashes}")"
corpora="$(realpath -m "${SDONNX_FUZZ_CORPUS:-$repo_root/build-fuzz/corpus}")"
if [[ ! -f "$fixtures/README.md" ]]; then
  echo "fixtures not found in $fixtures; set SDONNX_FIXTURES" >&2
  exit 2
fi

cd "$repo_root"
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSDONNX_FUZZ=ON -DSDONNX_BUILD_TESTS=OFF -DSDONNX_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build-fuzz --target "${targets[@]}" -j "$(nproc)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 "$repo_root/scripts/fuzz_seeds.py" "$fixtures" "$work/seeds"
mkdir -p "$crashes"
# fuzz_onnx_file writes each input into a folder under TMPDIR; the trap
# above removes it.
export TMPDIR="$work"
export SDONNX_FUZZ_TOKENIZER="$fixtures/clip/bpe_simple_vocab_16e6.txt.gz"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1"

declare -A max_len=([fuzz_safetensors]=16384 [fuzz_pickle]=16384 [fuzz_torch_checkpoint]=8192
                    [fuzz_onnx_file]=16384
                    [fuzz_tokenizer]=4096 [fuzz_prompt]=4096)
failed=0
for target in "${targets[@]}"; do
  corpus="$corpora/$target"
  mkdir -p "$corpus"
  log="$crashes/$target.log"
  echo "== $target: ${seconds}s, log in $log"
  status=0
  "build-fuzz/fuzz/$target" "$corpus" "$work/seeds/$target" \
    -max_total_time="$seconds" -max_len="${max_len[$target]:-65536}" -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$crashes/$target-" >"$log" 2>&1 ||
    status=$?
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|^#[0-9]+[[:space:]]+DONE" "$log" || true
  echo "corpus: $(find "$corpus" -type f | wc -l) inputs; exit status $status"
  if [[ $status -ne 0 ]]; then
    failed=1
    echo "$target found a problem; the input is in $crashes/ (see $log)"
  fi
done
exit $failed
