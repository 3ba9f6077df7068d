// The UNet of ldm's openaimodel.UNetModel (SD 1.x), as an ONNX graph.
//
// Graph contract (the names of the diffusers/optimum ONNX pipelines):
//   sample                 f32 [batch, in_channels, height, width]
//   timestep               f32 [timestep_count], 1 or batch; broadcast to the batch
//   encoder_hidden_states  f32 [batch, sequence, context_dim]
//   text_embeds            f32 [batch, text_embed_dim]   (SDXL only)
//   time_ids               f32 [batch, num_time_ids]     (SDXL only: sizes, crops, score)
//   -> out_sample          f32 [batch, out_channels, height, width]
// SDXL's vector conditioning y = [text_embeds, sinusoidal embedding of each
// time id] is built inside the graph and added to the time embedding
// through label_emb.
// Any latent size works: each upsampler resizes to the size of the skip
// connection it is concatenated with, so odd sizes round-trip.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "graph/builder.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr const char* kUNetPrefix = "model.diffusion_model.";

struct UNetSpec {
  std::string prefix = kUNetPrefix;
  std::int64_t in_channels = 0;
  std::int64_t out_channels = 0;
  std::int64_t model_channels = 0;
  std::int64_t context_dim = 0;
  std::vector<std::int64_t> channel_mult;
  std::int64_t num_res_blocks = 0;
  // Transformer depth of each level that has attention; 0 where none.
  std::vector<std::int64_t> transformer_depth;
  std::int64_t middle_transformer_depth = 0;
  bool linear_projection = false;  // proj_in/proj_out are Linear (SD 2.x), not 1x1 Conv.
  // Heads: a fixed count (num_heads) or a fixed width (num_head_channels); the
  // one that is positive wins, as in ldm.
  std::int64_t num_heads = 8;
  std::int64_t num_head_channels = -1;
  std::int64_t group_norm_groups = 32;
  // SDXL: label_emb's input width (adm_in_channels), split into the pooled
  // text embedding and num_time_ids sinusoidal embeddings of time_id_dim.
  std::int64_t adm_in_channels = 0;
  std::int64_t text_embed_dim = 0;
  std::int64_t num_time_ids = 0;
  std::int64_t time_id_dim = 256;
};

// Reads the architecture from the checkpoint's keys and shapes. num_heads and
// num_head_channels are not visible in shapes and keep their given values.
// For SDXL, the split of adm_in_channels is derived here assuming 256-wide
// time id embeddings; text_embed_dim may be corrected later from the text
// encoder's projection.
Status ReadUNetShapes(const Checkpoint& checkpoint, UNetSpec* spec);

Status BuildUNet(GraphBuilder& b, const UNetSpec& spec);

}  // namespace sdonnx
