#include "networks/text_transformer.h"

#include <onnx/onnx_pb.h>

#include <limits>
#include <vector>

#include "graph/layers.h"

namespace sdonnx {

std::string BuildTextTransformer(GraphBuilder& b, const TextTransformerParts& parts) {
  const std::int64_t n = parts.context_length;
  const std::string ids = b.Input("input_ids", onnx::TensorProto_DataType_INT32, {"batch", n});
  const std::string table = b.Weight(parts.token_embedding_key, {parts.vocab_size, parts.width});
  std::string h = b.Op("Gather", {table, ids}, {{"axis", std::int64_t{0}}});
  h = b.Op("Add", {h, b.Weight(parts.position_embedding_key, {n, parts.width})});

  // Causal mask: position i attends to positions 0..i.
  std::vector<float> mask_values(static_cast<std::size_t>(n * n), 0.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = i + 1; j < n; ++j) {
      mask_values[static_cast<std::size_t>(i * n + j)] = -std::numeric_limits<float>::infinity();
    }
  }
  const std::string mask = b.ConstFloat(mask_values, {n, n});

  const std::vector<Dim> state_dims = {"batch", n, parts.width};
  std::vector<std::string> states = {h};
  b.Output(h, "hidden_states.0", onnx::TensorProto_DataType_FLOAT, state_dims);
  for (std::int64_t i = 0; i < parts.layers; ++i) {
    h = parts.layer(b, h, i, mask);
    states.push_back(h);
    b.Output(h, "hidden_states." + std::to_string(i + 1), onnx::TensorProto_DataType_FLOAT,
             state_dims);
  }
  const std::string last = layers::LayerNorm(b, h, parts.final_norm_prefix, parts.layer_norm_eps);
  b.Output(last, "last_hidden_state", onnx::TensorProto_DataType_FLOAT, state_dims);
  // Clip skip N (AUTOMATIC1111): the final layer norm applied to the output
  // of layer L + 1 - N; clip skip 1 is last_hidden_state itself.
  for (std::int64_t skip = 2; skip <= parts.layers; ++skip) {
    const std::string& state = states[static_cast<std::size_t>(parts.layers + 1 - skip)];
    b.Output(layers::LayerNorm(b, state, parts.final_norm_prefix, parts.layer_norm_eps),
             "clip_skip_" + std::to_string(skip), onnx::TensorProto_DataType_FLOAT, state_dims);
  }

  // The end-of-text token has the highest id in CLIP's vocabulary.
  const std::string eot =
      b.Op("ArgMax", {ids}, {{"axis", std::int64_t{1}}, {"keepdims", std::int64_t{1}}});
  const std::string pooled = b.Op("GatherND", {last, eot}, {{"batch_dims", std::int64_t{1}}});
  b.Output(pooled, "pooler_output", onnx::TensorProto_DataType_FLOAT, {"batch", parts.width});
  return pooled;
}

}  // namespace sdonnx
