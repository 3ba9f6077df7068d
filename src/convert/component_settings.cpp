#include "convert/component_settings.h"

#include <algorithm>
#include <cstdio>

#include "util/log.h"

namespace sdonnx {
namespace {

// The two multiples of `multiple` around `value`, for error messages.
std::string Nearest(std::int64_t value, std::int64_t multiple) {
  const std::int64_t below = std::max<std::int64_t>(multiple, value / multiple * multiple);
  const std::int64_t above = below < value ? below + multiple : below;
  if (below == above) return std::to_string(below);
  return std::to_string(below) + " or " + std::to_string(above);
}

std::map<std::string, std::int64_t> StaticDims(const std::string& component, const ModelSpec& spec,
                                               const StaticShape& shape) {
  const std::int64_t f = DownsampleFactor(spec);
  const std::int64_t n = shape.batch;
  if (component == "unet") {
    std::int64_t sequence = 77;
    if (spec.text) sequence = spec.text->context_length;
    if (!spec.text && spec.open_clip) sequence = spec.open_clip->context_length;
    // generate runs the negative and the positive prompt as one batch;
    // instruct-pix2pix adds a run without the image.
    const std::int64_t copies = spec.variant == "instruct-pix2pix" ? 3 : 2;
    return {{"batch", copies * n},
            {"height", shape.height / f},
            {"width", shape.width / f},
            {"sequence", sequence},
            {"timestep_count", 1}};
  }
  const std::string fs = std::to_string(f);
  if (component == "vae_encoder") {
    return {{"batch", n},
            {"height", shape.height},
            {"width", shape.width},
            {"height/" + fs, shape.height / f},
            {"width/" + fs, shape.width / f}};
  }
  if (component == "vae_decoder") {
    return {{"batch", n},
            {"latent_height", shape.height / f},
            {"latent_width", shape.width / f},
            {fs + "*latent_height", shape.height},
            {fs + "*latent_width", shape.width}};
  }
  return {{"batch", n}};  // Text encoders: [batch, 77] token ids.
}

}  // namespace

std::int64_t DownsampleFactor(const ModelSpec& spec) {
  return spec.vae ? spec.vae->downsample_factor : 8;
}

Status ValidateStaticShape(const StaticShape& shape, std::int64_t f) {
  const std::int64_t multiple = std::max<std::int64_t>(8, f);
  for (const auto& [name, value] : {std::pair{"width", shape.width}, {"height", shape.height}}) {
    if (value < multiple || value % multiple != 0) {
      return Status::Error("--static-shape " + std::string(name) + " " + std::to_string(value) +
                           " is invalid: it must be a positive multiple of " +
                           std::to_string(multiple) + " (the VAE factor and 8); try " +
                           Nearest(std::max<std::int64_t>(value, 1), multiple));
    }
  }
  if (shape.batch < 1 || shape.batch > 64) {
    return Status::Error("--batch-size " + std::to_string(shape.batch) +
                         " is invalid: use 1 to 64 images per run");
  }
  return Status::Ok();
}

ComponentSettings SettingsFor(const std::string& component, const ModelSpec& spec,
                              const ConvertOptions& options) {
  ComponentSettings settings;
  const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
  settings.float16 = options.fp16;
  if (options.fp16 && sdxl && component == "vae_decoder" && !options.fp16_sdxl_vae_decoder) {
    settings.float16 = false;
    LogInfo(
        "vae_decoder: kept in float32 with source weights, because the SDXL VAE decoder "
        "overflows float16; --fp16-vae-decoder converts it anyway");
  }
  settings.float32_weights = options.fp32_weights && !settings.float16;
  settings.weight_precision = settings.float16           ? "fp16"
                              : settings.float32_weights ? "fp32"
                                                         : "source";
  settings.metadata["sdonnx.weight_precision"] = settings.weight_precision;
  settings.metadata["sdonnx.compute_precision"] = settings.float16 ? "fp16" : "fp32";
  // The text encoders' attention has a causal mask, which the builder
  // always writes with standard operators.
  settings.ort_attention = options.ort_attention && component.rfind("clip_text", 0) != 0;
  settings.metadata["sdonnx.attention"] =
      settings.ort_attention ? "com.microsoft.MultiHeadAttention" : "standard";
  // The VAE's single-head attention has 16 times smaller scores than the
  // UNet's 8 heads at batch 2, so it needs fewer chunks.
  const std::int64_t chunks = options.attention_chunks.value_or(kDefaultAttentionChunks);
  if (!settings.ort_attention && component == "unet") settings.attention_chunks = chunks;
  if (!settings.ort_attention && component.rfind("vae_", 0) == 0) {
    settings.attention_chunks = std::max<std::int64_t>(1, chunks / 4);
  }
  if (settings.attention_chunks > 1) {
    settings.metadata["sdonnx.attention_chunks"] = std::to_string(settings.attention_chunks);
  }
  if (options.static_shape) {
    const StaticShape& shape = *options.static_shape;
    settings.static_dims = StaticDims(component, spec, shape);
    settings.metadata["sdonnx.static_shape"] =
        std::to_string(shape.width) + "x" + std::to_string(shape.height);
    settings.metadata["sdonnx.static_batch"] = std::to_string(shape.batch);
  }
  return settings;
}

void LogConversion(const std::string& file_name, const WeightConversion& conversion,
                   bool widened) {
  if (conversion.converted_tensors == 0) return;
  const NarrowingCounts& total = conversion.total;
  LogInfo(file_name + ": " + std::to_string(conversion.converted_tensors) + " tensors " +
          (widened ? "widened to float32 (exact), " : "converted to float16, ") +
          std::to_string(total.values) + " values");
  if (!total.lossy()) return;
  char largest[32];
  std::snprintf(largest, sizeof(largest), "%g", static_cast<double>(total.largest_clamped));
  std::string message = file_name + ": float16 clamped " + std::to_string(total.clamped) +
                        " values to +-65504 (largest " + largest + ") and flushed " +
                        std::to_string(total.flushed_to_zero) + " tiny values to zero";
  auto worst = conversion.lossy;
  std::sort(worst.begin(), worst.end(), [](const auto& a, const auto& b) {
    return a.second.clamped + a.second.flushed_to_zero >
           b.second.clamped + b.second.flushed_to_zero;
  });
  if (worst.size() > 3) worst.resize(3);
  message += "; most in";
  for (const auto& [key, counts] : worst) {
    message += " '" + key + "' (" + std::to_string(counts.clamped) + " clamped, " +
               std::to_string(counts.flushed_to_zero) + " flushed)";
  }
  // Clamped weights change what the network computes; tiny values that
  // round to zero are usual in float16 conversion.
  if (total.clamped > 0) {
    LogWarning(message);
  } else {
    LogInfo(message);
  }
}

}  // namespace sdonnx
