// What a checkpoint is: its family, prediction type and the architecture of
// each component, read from tensor shapes first and from an original-format
// YAML config for what shapes cannot tell.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "networks/clip_text.h"
#include "networks/open_clip_text.h"
#include "networks/unet.h"
#include "networks/vae.h"
#include "util/status.h"

namespace sdonnx {

enum class Family { kSD1, kSD2, kSDXL, kSDXLRefiner };
std::string FamilyName(Family family);

struct ModelSpec {
  Family family = Family::kSD1;
  std::string family_basis;      // The keys or shapes that decided the family.
  std::string variant = "base";  // base, inpaint (9 input channels), instruct-pix2pix (8)
  std::string prediction_type = "epsilon";
  std::string prediction_basis;  // Why that prediction type was chosen.
  // True while the prediction type is only the family default and, for
  // SD 2.x, still to be decided by running the UNet on a probe input.
  bool needs_prediction_probe() const {
    return family == Family::kSD2 && prediction_basis.starts_with("SD 2.x without");
  }
  float vae_scaling_factor = 0.18215f;
  std::optional<std::string> config_path;  // The YAML that was read, if any.
  bool ema_unet = false;  // The UNet is built from the EMA weights (model_ema.*).

  UNetSpec unet;
  std::optional<VaeSpec> vae;
  // CLIP ViT-L in the Hugging Face layout (SD 1.x, SDXL's first encoder),
  // written as clip_text_<stem>.onnx.
  std::optional<ClipTextSpec> text;
  // OpenCLIP (SD 2.x ViT-H as clip_text, SDXL bigG as clip_text_2).
  std::optional<OpenClipTextSpec> open_clip;
  std::string open_clip_component = "clip_text";
  // For clip_text and clip_text_2: the output that the UNet takes as
  // context, and the id that pads a prompt's token chunk, as the family's
  // original code has them.
  std::string text_context_output = "last_hidden_state";
  std::int32_t text_pad_id = 49407;
  std::string text_2_context_output;
  std::int32_t text_2_pad_id = 0;
  // Human-readable lines on what was found and why, for the CLI to print.
  std::vector<std::string> notes;
};

// The YAML config that belongs to `checkpoint_path`: `explicit_config` if
// given, else STEM.yaml beside the checkpoint (the AUTOMATIC1111 convention),
// else nothing.
std::optional<std::string> FindConfig(const std::string& checkpoint_path,
                                      const std::optional<std::string>& explicit_config);

// The line of ModelSpec::notes that describes `vae`, for the VAE actually
// converted.
std::string VaeNote(const VaeSpec& vae);

// Checks that each UNet transformer's width splits into the heads that
// num_heads / num_head_channels give. The head count is not in the
// weights, so when no config was read the error asks for --config.
Status CheckUNetHeads(const ModelSpec& spec);

// Detects the family and reads every component's hyperparameters. A config
// given explicitly must exist and parse; one found beside the file is used
// if it parses.
// `prediction_type`, if set ("epsilon", "v_prediction" or "v"), overrides
// the config and the family default; "probe" requests the SD 2.x UNet probe
// even when a config is present.
Result<ModelSpec> DetectModel(const Checkpoint& checkpoint,
                              const std::optional<std::string>& explicit_config,
                              const std::optional<std::string>& prediction_type = std::nullopt);

}  // namespace sdonnx
