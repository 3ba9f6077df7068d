// The CLIP text transformer in the Hugging Face CLIPTextModel layout
// ("...text_model.embeddings", "...encoder.layers.N", "...final_layer_norm"),
// as one ONNX graph.
//
//   input_ids          int32 [batch, context_length]
//   -> last_hidden_state f32 [batch, context_length, width], after final_layer_norm
//      pooler_output     f32 [batch, width], last_hidden_state at each row's
//                        first end-of-text token (its highest id)
//      hidden_states.N   f32 [batch, context_length, width] for N = 0..layers:
//                        0 is the embedding output, N the output of layer N,
//                        without final_layer_norm.
//      clip_skip_N       f32 [batch, context_length, width] for N = 2..layers:
//                        final_layer_norm(hidden_states.(layers + 1 - N)),
//                        the context AUTOMATIC1111 uses at clip skip N.
// Positions are generated in the graph (0..context_length-1); a checkpoint's
// position_ids buffer is never read.
#pragma once

#include <cstdint>
#include <string>

#include "formats/checkpoint.h"
#include "graph/builder.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr const char* kSd1TextPrefix = "cond_stage_model.transformer.text_model.";

struct ClipTextSpec {
  std::string prefix = kSd1TextPrefix;
  std::int64_t vocab_size = 0;
  std::int64_t context_length = 0;
  std::int64_t width = 0;
  std::int64_t layers = 0;
  std::int64_t heads = 0;  // 0: width / 64, the rule of every released CLIP.
  bool quick_gelu = true;  // OpenAI CLIP ViT-L; false selects exact GELU.
  float layer_norm_eps = 1e-5f;
};

Status ReadClipTextShapes(const Checkpoint& checkpoint, ClipTextSpec* spec);

Status BuildClipText(GraphBuilder& b, const ClipTextSpec& spec);

}  // namespace sdonnx
