// The KL autoencoder of ldm (first_stage_model), as two ONNX graphs.
//
// vae_encoder: sample f32 [batch, 3, height, width], pixels in [-1, 1]
//   -> latent_parameters f32 [batch, 2 * latent_channels, height / f, width / f],
//      quant_conv's output: the mean, then the log-variance. No sampling.
// vae_decoder: latent_sample f32 [batch, latent_channels, h, w], already
//   divided by the scaling factor -> sample f32 [batch, 3, f * h, f * w].
// f, the downsampling factor, and latent_channels come from the weights.
#pragma once

#include <cstdint>
#include <string>

#include "formats/checkpoint.h"
#include "graph/builder.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr const char* kVaePrefix = "first_stage_model.";

struct VaeSpec {
  std::string prefix = kVaePrefix;
  std::int64_t image_channels = 3;
  std::int64_t latent_channels = 0;  // embed_dim: post_quant_conv's input channels.
  std::int64_t base_channels = 0;    // ddconfig.ch
  std::int64_t levels = 0;           // len(ch_mult)
  std::int64_t downsample_factor = 1;
  std::int64_t group_norm_groups = 32;
};

// Reads the architecture from keys and shapes. A VAE missing some tensors
// is still read when other tensors show its sizes. When no tensor shows
// them, the error names the missing tensors.
Status ReadVaeShapes(const Checkpoint& checkpoint, VaeSpec* spec);

Status BuildVaeEncoder(GraphBuilder& b, const VaeSpec& spec);
Status BuildVaeDecoder(GraphBuilder& b, const VaeSpec& spec);

}  // namespace sdonnx
