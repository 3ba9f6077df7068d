// The OpenCLIP text transformer (open_clip's CLIP.transformer, as SD 2.x
// stores it under "cond_stage_model.model."), as one ONNX graph with the
// same contract as clip_text.h:
//
//   input_ids           int32 [batch, context_length]
//   -> last_hidden_state f32 [batch, context_length, width], after ln_final
//      pooler_output     f32 [batch, width], last_hidden_state at each row's
//                        first end-of-text token (its highest id)
//      text_embeds       f32 [batch, projection_dim], pooler_output times
//                        text_projection; only when the checkpoint has it
//      hidden_states.N   f32 for N = 0..layers, without ln_final
//      clip_skip_N       f32 for N = 2..layers: ln_final(hidden_states.(layers + 1 - N))
//
// Attention weights are packed: in_proj_weight is [3 x width, width] with
// the query, key and value rows in that order.
#pragma once

#include <cstdint>
#include <string>

#include "formats/checkpoint.h"
#include "graph/builder.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr const char* kSd2TextPrefix = "cond_stage_model.model.";

struct OpenClipTextSpec {
  std::string prefix = kSd2TextPrefix;
  std::int64_t vocab_size = 0;
  std::int64_t context_length = 0;
  std::int64_t width = 0;
  std::int64_t layers = 0;
  std::int64_t heads = 0;   // 0: width / 64, the rule of every released OpenCLIP model.
  bool has_projection = false;
  // Layers of the architecture, which can be one more than the file holds:
  // SD 2.x never uses the last layer, and some files leave it out. 0 when
  // unknown; ViT-H (width 1024) has 24 and ViT-bigG (width 1280) 32.
  std::int64_t full_layers = 0;
  float layer_norm_eps = 1e-5f;
};

Status ReadOpenClipTextShapes(const Checkpoint& checkpoint, OpenClipTextSpec* spec);

Status BuildOpenClipText(GraphBuilder& b, const OpenClipTextSpec& spec);

}  // namespace sdonnx
