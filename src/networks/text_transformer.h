// What the CLIP and OpenCLIP text graphs share: the token and position
// embeddings, the causal mask, the per-layer outputs, the clip skip outputs
// and the pooled output at the end-of-text token. Each network supplies its
// own layer.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "graph/builder.h"

namespace sdonnx {

struct TextTransformerParts {
  std::int64_t vocab_size = 0;
  std::int64_t context_length = 0;
  std::int64_t width = 0;
  std::int64_t layers = 0;
  float layer_norm_eps = 1e-5f;
  std::string token_embedding_key;
  std::string position_embedding_key;
  std::string final_norm_prefix;  // reads "<prefix>.weight" and "<prefix>.bias"
  // Builds layer `index` on `x` with the causal `mask`; returns its output.
  std::function<std::string(GraphBuilder&, const std::string& x, std::int64_t index,
                            const std::string& mask)>
      layer;
};

// Adds input_ids and the outputs hidden_states.N, last_hidden_state,
// clip_skip_N and pooler_output; returns the pooler_output value.
std::string BuildTextTransformer(GraphBuilder& b, const TextTransformerParts& parts);

}  // namespace sdonnx
