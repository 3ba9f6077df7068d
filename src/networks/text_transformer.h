// The frame that the CLIP and OpenCLIP text graphs share: token and position
// embeddings, the causal mask, per-layer and clip skip outputs, and the
// pooled output at the end-of-text token. Each network supplies its layer.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "formats/checkpoint.h"
#include "graph/builder.h"
#include "util/status.h"

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

// Sizes read from a text transformer's weights.
struct TextShapes {
  std::int64_t vocab_size = 0;
  std::int64_t context_length = 0;
  std::int64_t width = 0;
  std::int64_t layers = 0;
};

// Reads the sizes from the token and position embeddings, and counts layers
// up to the largest index N of any key "<layer_prefix>N.*". A missing
// embedding does not stop detection: the width then comes from the other
// embedding or "<layer_prefix>0<layer_probe>", and the counts from the
// CLIP defaults (49408 tokens, 77 positions).
Result<TextShapes> ReadTextShapes(const Checkpoint& checkpoint, const std::string& token_key,
                                  const std::string& position_key, const std::string& layer_prefix,
                                  const std::string& layer_probe);

// Returns `heads` if positive, else width / 64 (the rule of every released
// CLIP and OpenCLIP model), or an error if the width does not split evenly.
Result<std::int64_t> TextHeads(std::int64_t width, std::int64_t heads);

// Adds input_ids and the outputs hidden_states.N, last_hidden_state,
// clip_skip_N and pooler_output; returns the pooler_output value.
std::string BuildTextTransformer(GraphBuilder& b, const TextTransformerParts& parts);

}  // namespace sdonnx
