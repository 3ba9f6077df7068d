// The keys a complete single-file checkpoint of a detected family holds,
// derived from the hyperparameters read from its shapes (ldm/sgm UNetModel,
// ldm AutoencoderKL, Hugging Face CLIPTextModel, OpenCLIP text tower), and
// the non-weight keys that loaders accept but do not need.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "model/model_spec.h"

namespace sdonnx {

// One component that AUTOMATIC1111 and ComfyUI load from a checkpoint.
struct ExpectedComponent {
  std::string name;    // "unet", "vae", "text_encoder" or "text_encoder_2"
  std::string title;   // "UNet", "VAE", "text encoder (CLIP ViT-L)", ...
  std::string prefix;  // e.g. "model.diffusion_model."
  // False when the file has no key under `prefix`; `required` is then empty,
  // since the architecture of an absent component cannot be read.
  bool present = false;
  std::vector<std::string> required;  // weight keys, in module order
  // The shape ldm/sgm's load_state_dict(strict=True) requires of each
  // key: shapes[i] belongs to required[i].
  std::vector<std::vector<std::int64_t>> shapes;
  // The prefix the file uses instead of `prefix`, when it keeps the
  // component under other names (ComfyUI's clip_l., diffusers'
  // text_encoder.); `required` then uses it too. Empty otherwise.
  std::string stored_prefix;
};

// The components of `spec`'s family, with every weight key each one needs
// and its shape. Widths that `spec` reads from a single tensor (text width,
// MLP width, context width, VAE level widths) are taken instead from the
// majority of the tensors that show them, so that one damaged tensor is the
// one that mismatches.
// Layer counts that the file may truncate come from the architecture where
// it is known (CLIP ViT-L has 12 layers, OpenCLIP ViT-H 24, ViT-bigG 32).
// NOTE: the VAE's blocks per level are counted in the file (the largest
// count of any level), so a VAE missing the same block in every level, or
// a whole last level, is not noticed.
std::vector<ExpectedComponent> ExpectedComponents(const Checkpoint& checkpoint,
                                                  const ModelSpec& spec);

// The VAE read from `checkpoint` (which may be a separate VAE file), with
// every weight key and shape it needs.
ExpectedComponent ExpectedVae(const Checkpoint& checkpoint, const VaeSpec& vae);

// The key prefix of each text encoder the family has, in embedder order.
struct TextEncoderSlot {
  std::string name;    // "text_encoder" or "text_encoder_2"
  std::string title;
  std::string prefix;
};
std::vector<TextEncoderSlot> TextEncoderSlots(Family family);

// True for keys that loaders accept but do not need: position_ids,
// logit_scale, SD 2.x's unused text_projection, ldm's schedule buffers,
// sgm's denoiser.sigmas, EMA shadows and prediction-type markers.
bool IsKnownOptionalKey(const std::string& key, Family family);

}  // namespace sdonnx
