// generate: txt2img, img2img, inpainting and instruct-pix2pix on the files `convert` wrote,
// through ONNX Runtime.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/ort_session.h"
#include "util/status.h"

namespace sdonnx {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.0f;
  std::string sampler = "euler_a";
  std::uint64_t seed = 0;
  std::int64_t width = 512;
  std::int64_t height = 512;
  int batch_size = 1;
  int clip_skip = 1;
  std::optional<std::string> init_image;
  // img2img / inpainting strength; unset means 0.75 for img2img and 1.0 for
  // inpainting.
  std::optional<double> strength;
  std::optional<std::string> mask;  // White marks the area to repaint.
  // instruct-pix2pix: how closely to follow the init image (AUTOMATIC1111's
  // "Image CFG scale"); 1 turns image guidance off. Unset means 1.5.
  std::optional<float> image_cfg_scale;
  // SDXL refiner: the aesthetic scores of the prompt and the negative prompt
  // in its time ids. Unset means 6 and 2.5, diffusers' defaults.
  std::optional<float> aesthetic_score;
  std::optional<float> negative_aesthetic_score;
  std::optional<std::string> tokenizer;
  SessionOptions session;
  std::string output;  // OUT.png; a batch writes OUT-1.png, OUT-2.png, ...
  bool overwrite = false;
};

struct GenerateResult {
  std::vector<std::string> files;
  std::string parameters;  // The PNG "parameters" text of the first image.
  double load_seconds = 0;
  // The models whose session cache entry this run built (SessionOptions::cache_dir).
  std::vector<std::string> cache_built;
  // The cache entries of changed or removed models those builds removed.
  std::size_t cache_entries_removed = 0;
  std::uint64_t cache_bytes_freed = 0;
  double seconds_per_step = 0;
  // The denoised latents of the batch, [batch, latent_channels, h, w], still
  // multiplied by the scaling factor; for tests and diagnostics.
  std::vector<float> latents;
};

// Called after each UNet step with the step number (1-based), the total and
// the seconds since sampling started.
using StepCallback = std::function<void(int step, int total, double seconds)>;

Result<GenerateResult> Generate(const GenerateOptions& options, const StepCallback& on_step = {});

// The sizes generate accepts around `value`: the nearest multiples of 8 (and
// of the VAE factor) below and above, for error messages.
std::string AllowedSizesNear(std::int64_t value, std::int64_t multiple);

}  // namespace sdonnx
