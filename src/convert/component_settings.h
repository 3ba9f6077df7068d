// Per-component choices of a conversion: float16 or float32 compute, fixed
// shapes, and the metadata that records them.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "convert/convert.h"
#include "graph/model_writer.h"
#include "model/model_spec.h"

namespace sdonnx {

struct ComponentSettings {
  bool float16 = false;
  bool float32_weights = false;  // GraphBuilder::SetFloat32Weights
  bool ort_attention = false;  // GraphBuilder::SetOrtAttention
  std::int64_t attention_chunks = 1;  // GraphBuilder::SetAttentionChunks
  std::string weight_precision = "source";  // sdonnx.weight_precision: or fp16, fp32
  std::map<std::string, std::int64_t> static_dims;  // GraphBuilder::SetStaticDims
  std::map<std::string, std::string> metadata;
};

// The settings of `component` ("unet", "vae_encoder", "vae_decoder",
// "clip_text", "clip_text_2") under `options`.
ComponentSettings SettingsFor(const std::string& component, const ModelSpec& spec,
                              const ConvertOptions& options);

// The VAE downsampling factor of `spec`, or 8 (every released VAE's) when the
// checkpoint has no VAE.
std::int64_t DownsampleFactor(const ModelSpec& spec);

// Logs the conversion counts of one written file. A narrowing that clamped
// or flushed values also logs a warning with the worst tensors. `widened`
// marks the exact widening of --fp32-weights.
void LogConversion(const std::string& file_name, const WeightConversion& conversion,
                   bool widened);

}  // namespace sdonnx
