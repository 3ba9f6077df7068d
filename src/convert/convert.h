// convert: a single-file checkpoint to one ONNX file per component.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "graph/model_writer.h"
#include "model/model_spec.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr int kDefaultOpset = 17;
inline constexpr int kMinOpset = 14;
inline constexpr int kMaxOpset = 17;

struct ConvertOptions {
  std::string model_path;
  std::string output_dir;
  std::optional<std::string> config_path;
  std::optional<std::string> prediction_type;  // Overrides detection: epsilon or v_prediction.
  int opset = kDefaultOpset;
  ExternalData external_data = ExternalData::kAuto;
  bool overwrite = false;
  // Convert the UNet's EMA weights (model_ema.*) instead of the main ones.
  // Files that have only EMA weights use them without this.
  bool ema = false;
  // A separate VAE (AUTOMATIC1111's "VAE" files) in the original naming,
  // with or without the first_stage_model. prefix; it replaces the
  // checkpoint's own VAE, or supplies the one it lacks.
  std::optional<std::string> vae_path;
};

struct ConvertedComponent {
  std::string component;  // unet, vae_encoder, vae_decoder, clip_text
  std::vector<WrittenFile> files;
};

struct ConvertReport {
  ModelSpec spec;
  std::string source_sha256;
  std::vector<ConvertedComponent> components;
  // extras_STEM.safetensors: the source tensors no graph stores and the
  // record that rebuild restores the checkpoint from.
  WrittenFile extras;
};

// Converts every component the checkpoint has. Files are written into a
// staging folder inside the output folder, checked, and moved into place
// only when all of them succeeded; on any error the output folder is left as
// it was. The checkpoint is only ever opened read-only.
Result<ConvertReport> ConvertCheckpoint(const ConvertOptions& options);

}  // namespace sdonnx
