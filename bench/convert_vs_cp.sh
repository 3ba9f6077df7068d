#!/usr/bin/env bash
# Converts full-size checkpoints, synthesized from manifests with random
# weights in the manifest's dtypes, and copies the same files with cp, RUNS
# times each, on the same disk. Prints the median wall time and peak RSS of
# each command for each model.
#
#   bench/convert_vs_cp.sh [WORK_DIR] [RUNS] [MODEL ...]
#
# MODEL names a manifest, such as sd15 (fp32, 4.27 GB; the default) or
# sdxl-base (fp32, 13.9 GB). A -fp16 suffix stores its float tensors as
# float16, as in sdxl-base-fp16 (6.94 GB, the size of the released file).
# WORK_DIR (default /tmp/sdonnx-bench) needs three times the models' size
# free. Before each command the script flushes dirty pages and, where it
# may (as root), drops the page cache, then reads the source once, so
# every command starts with the source in the page cache and the rest of
# memory free. Without that, runs slow down as the cache fills with earlier
# outputs and the kernel has to reclaim pages while writing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/sdonnx-bench}"
runs="${2:-5}"
shift $(($# < 2 ? $# : 2))
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(sd15)
build="$repo_root/build"
manifests="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}/manifests"

measure() {  # prints "SECONDS PEAK_RSS_KB" for the command in "$@"
  local log="$work/time.log"
  /usr/bin/time -o "$log" -f "%e %M" "$@" >/dev/null
  cat "$log"
}

settle() {  # the same starting state for every command: see the header
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
  cat "$1" >/dev/null
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

bench_model() {
  local model="$1"
  local source_file="$work/$model.safetensors"
  local output="$work/onnx"  # the folder generate_bench.sh uses for sd15
  [[ "$model" == sd15 ]] || output="$work/onnx-$model"
  if [[ ! -f "$source_file" ]]; then
    if [[ "$model" == *-fp16 ]]; then
      "$build/bench/sdonnx_synthesize" "$manifests/${model%-fp16}.tsv" "$source_file" random 1 f16
    else
      "$build/bench/sdonnx_synthesize" "$manifests/$model.tsv" "$source_file" random 1
    fi
  fi
  echo "source: $source_file ($(du -h --apparent-size "$source_file" | cut -f1))"
  : >"$work/cp.txt"; : >"$work/cp_sync.txt"; : >"$work/convert.txt"
  for ((i = 1; i <= runs; i++)); do
    rm -rf "$work/copy.safetensors" "$output"
    settle "$source_file"
    measure cp "$source_file" "$work/copy.safetensors" >>"$work/cp.txt"
    rm -f "$work/copy.safetensors"
    settle "$source_file"
    measure sh -c 'cp "$1" "$2" && sync "$2"' sh "$source_file" "$work/copy.safetensors" \
      >>"$work/cp_sync.txt"
    rm -f "$work/copy.safetensors"
    settle "$source_file"
    measure "$build/sdonnx" convert "$source_file" "$output" --force >>"$work/convert.txt"
  done

  printf '%-28s %12s %14s\n' "command (median of $runs)" "wall (s)" "peak RSS (MB)"
  for name in cp cp_sync convert; do
    wall="$(cut -d' ' -f1 "$work/$name.txt" | median)"
    rss_kb="$(cut -d' ' -f2 "$work/$name.txt" | median)"
    printf '%-28s %12s %14d\n' "$name" "$wall" "$((rss_kb / 1024))"
  done
  du -ch "$output"/* | tail -1
}

mkdir -p "$work"
for model in "${models[@]}"; do bench_model "$model"; done
