#!/usr/bin/env bash
# Loads the full-size SD 1.5 UNet in ONNX Runtime (CPU, 2 threads) under
# each session setting, with standard attention in 64 query chunks (the
# default), in one piece (--attention-chunks 1) and with --ort-attention,
# and runs one 512x512 step with guidance (batch 2, 64x64 latents) twice per
# load. Also times an MLAS MatMul (4096^3) in the same process and prints
# the graph's node count by op type and FLOPs per step.
#
#   bench/unet_load_and_step.sh [WORK_DIR] [LOADS]
#
# WORK_DIR is the folder of bench/convert_vs_cp.sh; the conversions are
# made there if missing. Each setting is loaded LOADS times (default 3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/sdonnx-bench}"
loads="${2:-3}"
build="$repo_root/build"
fixtures="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}"

mkdir -p "$work"
[[ -f "$work/sd15.safetensors" ]] ||
  "$build/bench/sdonnx_synthesize" "$fixtures/manifests/sd15.tsv" "$work/sd15.safetensors" random 1
[[ -f "$work/onnx/unet_sd15.onnx" ]] ||
  "$build/sdonnx" convert "$work/sd15.safetensors" "$work/onnx" --force >/dev/null
[[ -f "$work/onnx-attention-chunks-1/unet_sd15.onnx" ]] ||
  "$build/sdonnx" convert "$work/sd15.safetensors" "$work/onnx-attention-chunks-1" \
    --attention-chunks 1 --force >/dev/null
[[ -f "$work/onnx-mha/unet_sd15.onnx" ]] ||
  "$build/sdonnx" convert "$work/sd15.safetensors" "$work/onnx-mha" --ort-attention --force >/dev/null

for model in onnx onnx-attention-chunks-1; do
  "$build/bench/sdonnx_graph_stats" "$work/$model/unet_sd15.onnx" sample=2,4,64,64 timestep=1 \
    encoder_hidden_states=2,77,768 || true
done

for model in onnx onnx-attention-chunks-1 onnx-mha; do
  for setting in "--opt=extended" "--opt=all --prepack"; do
    for ((i = 1; i <= loads; i++)); do
      echo "== $model/unet_sd15.onnx $setting (load $i, load average $(cut -d' ' -f1 /proc/loadavg))"
      "$build/bench/sdonnx_run_unet" "$work/$model/unet_sd15.onnx" 2 64 2 $setting --gemm=4096
    done
  done
done
