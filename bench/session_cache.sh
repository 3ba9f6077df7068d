#!/usr/bin/env bash
# Loads the full-size SD 1.5 UNet (the default export: standard operators,
# attention in 64 query chunks) on the CPU with 2 threads, once as generate
# does by default and once through generate's --cache-dir. Each load runs a
# 512x512 step with guidance (batch 2, 64x64 latents) three times. Each process
# first times an MLAS MatMul (4096^3) as the GEMM rate of that moment.
#
#   bench/session_cache.sh [WORK_DIR] [LOADS] [EXPORT]
#
# WORK_DIR is the folder of bench/convert_vs_cp.sh; the conversion is made
# there if missing. EXPORT is "default" or "ort-attention" (the export
# converted with --ort-attention instead). The cache goes to
# WORK_DIR/session-cache, emptied first, so the first cached load builds
# the entry (timed as "build"). Each setting is then loaded LOADS times
# (default 5).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/sdonnx-bench}"
loads="${2:-5}"
build="$repo_root/build"
fixtures="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}"
export_kind="${3:-default}"
case "$export_kind" in
  default) folder="$work/onnx" convert_options=() ;;
  ort-attention) folder="$work/onnx-mha" convert_options=(--ort-attention) ;;
  *) echo "error: EXPORT must be default or ort-attention, not '$export_kind'" >&2; exit 2 ;;
esac
unet="$folder/unet_sd15.onnx"
cache="$work/session-cache"

mkdir -p "$work"
[[ -f "$work/sd15.safetensors" ]] ||
  "$build/bench/sdonnx_synthesize" "$fixtures/manifests/sd15.tsv" "$work/sd15.safetensors" random 1
[[ -f "$unet" ]] ||
  "$build/sdonnx" convert "$work/sd15.safetensors" "$folder" "${convert_options[@]}" --force >/dev/null

run() {
  echo "== $1 (load average $(cut -d' ' -f1 /proc/loadavg))"
  shift
  "$build/bench/sdonnx_run_unet" "$unet" 2 64 3 --gemm=4096 "$@"
}

rm -rf "$cache"
run "build the cache entry" --cache-dir="$cache"
du -sh "$cache"
for ((i = 1; i <= loads; i++)); do
  run "default session, load $i"
  run "through the cache, load $i" --cache-dir="$cache"
done
