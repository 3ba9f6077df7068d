#!/usr/bin/env bash
# Generates one 512x512 image with classifier-free guidance (the UNet runs
# at batch 2) from a full-size SD 1.5 conversion, and reports seconds per
# UNet step, model load time and the peak RSS of the whole run.
#
#   bench/generate_bench.sh [WORK_DIR] [STEPS] [CONVERT_OPTION ...]
#
# WORK_DIR is the folder of bench/convert_vs_cp.sh. The checkpoint there is
# converted first if it is missing: into onnx/, or with options such as
# --ort-attention into onnx-ort-attention/. SDONNX_GENERATE_OPTIONS adds
# options to generate, such as "--cache-dir /tmp/sdonnx-bench/session-cache".
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-/tmp/sdonnx-bench}"
steps="${2:-3}"
build="$repo_root/build"
fixtures="${SDONNX_FIXTURES:-$repo_root/../shared/fixtures}"

shift $(($# < 2 ? $# : 2))
convert_options=("$@")
models="$work/onnx"
for option in "${convert_options[@]}"; do models+="-${option#--}"; done

if [[ ! -f "$models/unet_sd15.onnx" ]]; then
  mkdir -p "$work"
  [[ -f "$work/sd15.safetensors" ]] ||
    "$build/bench/sdonnx_synthesize" "$fixtures/manifests/sd15.tsv" "$work/sd15.safetensors" random 1
  "$build/sdonnx" convert "$work/sd15.safetensors" "$models" --force "${convert_options[@]}" \
    >/dev/null
fi

/usr/bin/time -o "$work/generate-time.log" -f "%e %M" \
  "$build/sdonnx" generate --model "$models" --prompt "a lighthouse at dusk" \
  --negative-prompt "blurry" --steps "$steps" --cfg-scale 7 --width 512 --height 512 \
  --threads 2 --seed 1 --tokenizer "$fixtures/clip/bpe_simple_vocab_16e6.txt.gz" \
  --output "$work/generate.png" --force ${SDONNX_GENERATE_OPTIONS:-}
read -r wall rss_kb <"$work/generate-time.log"
echo "whole run: $wall s wall, peak RSS $((rss_kb / 1024)) MB"
