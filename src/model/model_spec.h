// What a checkpoint is: its family, prediction type and the architecture of
// each component, read from tensor shapes first and from an original-format
// YAML config for what shapes cannot tell.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "networks/clip_text.h"
#include "networks/unet.h"
#include "networks/vae.h"
#include "util/status.h"

namespace sdonnx {

enum class Family { kSD1, kSD2, kSDXL, kSDXLRefiner };
std::string FamilyName(Family family);

struct ModelSpec {
  Family family = Family::kSD1;
  std::string variant = "base";  // base, inpaint (9 input channels), instruct-pix2pix (8)
  std::string prediction_type = "epsilon";
  std::string prediction_basis;  // Why that prediction type was chosen.
  float vae_scaling_factor = 0.18215f;
  std::optional<std::string> config_path;  // The YAML that was read, if any.

  UNetSpec unet;
  std::optional<VaeSpec> vae;
  std::optional<ClipTextSpec> text;
  // Human-readable lines on what was found and why, for the CLI to print.
  std::vector<std::string> notes;
};

// The YAML config that belongs to `checkpoint_path`: `explicit_config` if
// given, else STEM.yaml beside the checkpoint (the AUTOMATIC1111 convention),
// else nothing.
std::optional<std::string> FindConfig(const std::string& checkpoint_path,
                                      const std::optional<std::string>& explicit_config);

// Detects the family and reads every component's hyperparameters. A config
// given explicitly must exist and parse; one found beside the file is used
// if it parses.
Result<ModelSpec> DetectModel(const Checkpoint& checkpoint,
                              const std::optional<std::string>& explicit_config);

}  // namespace sdonnx
