#!/usr/bin/env bash
# Loads the UNet of an fp16 SDXL base checkpoint converted three ways and
# runs it on the CPU (2 threads, batch 2), printing load time, step times
# and peak RSS of each. The three are the default conversion with its
# float16 weights widened by their Cast at each run (generate's default),
# the same file with the weights widened once at load (generate
# --widen-at-load), and a conversion with --fp32-weights.
#
#   bench/widen_weights.sh [WORK_DIR] [LATENT_SIZE] [RUNS]
#
# WORK_DIR is the folder of bench/convert_vs_cp.sh (sdxl-base-fp16.safetensors
# is synthesized there if missing). LATENT_SIZE defaults to 64 (512x512),
# RUNS to 3.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/sdonnx-bench}"
latent="${2:-64}"
runs="${3:-3}"
build="$repo_root/build"
fixtures="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}"
source="$work/sdxl-base-fp16.safetensors"

mkdir -p "$work"
[[ -f "$source" ]] ||
  "$build/bench/sdonnx_synthesize" "$fixtures/manifests/sdxl-base.tsv" "$source" random 1 f16
[[ -f "$work/onnx-sdxl-base-fp16/unet_sdxl-base-fp16.onnx" ]] ||
  "$build/sdonnx" convert "$source" "$work/onnx-sdxl-base-fp16" --force >/dev/null
[[ -f "$work/onnx-sdxl-fp32w/unet_sdxl-base-fp16.onnx" ]] ||
  "$build/sdonnx" convert "$source" "$work/onnx-sdxl-fp32w" --fp32-weights --force >/dev/null

run() {
  echo "== $1 (load average $(cut -d' ' -f1 /proc/loadavg))"
  shift
  "$build/bench/sdonnx_run_unet" "$@"
}
unet="$work/onnx-sdxl-base-fp16/unet_sdxl-base-fp16.onnx"
run "float16 weights, widened at each run (default)" "$unet" 2 "$latent" "$runs"
run "float16 weights, widened at load (--widen-at-load)" "$unet" 2 "$latent" "$runs" --widen-at-load
run "--fp32-weights" "$work/onnx-sdxl-fp32w/unet_sdxl-base-fp16.onnx" 2 "$latent" "$runs"
