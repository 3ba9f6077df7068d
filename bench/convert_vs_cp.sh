#!/usr/bin/env bash
# Converts a full-size SD 1.5 fp32 checkpoint, synthesized from the SD 1.5
# manifest with random weights, and copies the same file with cp, RUNS times
# each, on the same disk. Prints the median wall time and peak RSS of both.
#
#   bench/convert_vs_cp.sh [WORK_DIR] [RUNS]
#
# WORK_DIR (default /tmp/sdonnx-bench) needs about 13 GB free. The page cache
# is not dropped between runs, so both commands read a warm source file.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/sdonnx-bench}"
runs="${2:-5}"
build="$repo_root/build"
manifest="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}/manifests/sd15.tsv"
source_file="$work/sd15.safetensors"

mkdir -p "$work"
if [[ ! -f "$source_file" ]]; then
  "$build/bench/sdonnx_synthesize" "$manifest" "$source_file" random 1
fi
echo "source: $source_file ($(du -h --apparent-size "$source_file" | cut -f1))"

measure() {  # prints "SECONDS PEAK_RSS_KB" for the command in "$@"
  local log="$work/time.log"
  /usr/bin/time -o "$log" -f "%e %M" "$@" >/dev/null
  cat "$log"
}

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

: >"$work/cp.txt"; : >"$work/cp_sync.txt"; : >"$work/convert.txt"
for ((i = 1; i <= runs; i++)); do
  rm -rf "$work/copy.safetensors" "$work/onnx"
  measure cp "$source_file" "$work/copy.safetensors" >>"$work/cp.txt"
  rm -f "$work/copy.safetensors"
  measure sh -c 'cp "$1" "$2" && sync "$2"' sh "$source_file" "$work/copy.safetensors" \
    >>"$work/cp_sync.txt"
  rm -f "$work/copy.safetensors"
  measure "$build/sdonnx" convert "$source_file" "$work/onnx" --force >>"$work/convert.txt"
done

printf '%-28s %12s %14s\n' "command (median of $runs)" "wall (s)" "peak RSS (MB)"
for name in cp cp_sync convert; do
  wall="$(cut -d' ' -f1 "$work/$name.txt" | median)"
  rss_kb="$(cut -d' ' -f2 "$work/$name.txt" | median)"
  printf '%-28s %12s %14d\n' "$name" "$wall" "$((rss_kb / 1024))"
done
du -ch "$work/onnx"/* | tail -1
