#include "networks/text_transformer.h"

#include <onnx/onnx_pb.h>

#include <limits>
#include <vector>

#include "graph/layers.h"

namespace sdonnx {

Result<TextShapes> ReadTextShapes(const Checkpoint& checkpoint, const std::string& token_key,
                                  const std::string& position_key, const std::string& layer_prefix,
                                  const std::string& layer_probe) {
  const TensorInfo* tokens = checkpoint.Find(token_key);
  const TensorInfo* positions = checkpoint.Find(position_key);
  if (tokens == nullptr || tokens->shape.size() != 2) {
    return Status::Error(checkpoint.path() + ": text encoder tensor '" + token_key +
                         "' is missing or not 2-D");
  }
  if (positions == nullptr || positions->shape.size() != 2) {
    return Status::Error(checkpoint.path() + ": text encoder tensor '" + position_key +
                         "' is missing or not 2-D");
  }
  if (positions->shape[1] != tokens->shape[1]) {
    // The first layer's norm shows which of the two embeddings is wrong.
    const TensorInfo* norm = checkpoint.Find(layer_prefix + "0" + layer_probe);
    const std::int64_t width =
        norm != nullptr && norm->shape.size() == 1 ? norm->shape[0] : tokens->shape[1];
    const bool tokens_wrong = tokens->shape[1] != width;
    const std::string& key = tokens_wrong ? token_key : position_key;
    const std::vector<std::int64_t>& found = tokens_wrong ? tokens->shape : positions->shape;
    return Status::Error(checkpoint.path() + ": tensor '" + key + "' has shape " +
                         ShapeText(found) +
                         ", but the text encoder detected from the other tensors needs " +
                         ShapeText({found[0], width}) +
                         "; the file is damaged or was edited: download it again or use the "
                         "original checkpoint");
  }
  TextShapes shapes;
  shapes.vocab_size = tokens->shape[0];
  shapes.width = tokens->shape[1];
  shapes.context_length = positions->shape[0];
  while (checkpoint.Has(layer_prefix + std::to_string(shapes.layers) + layer_probe)) {
    ++shapes.layers;
  }
  if (shapes.layers == 0) {
    return Status::Error(checkpoint.path() + ": text encoder has no layers under '" + layer_prefix +
                         "0'");
  }
  return shapes;
}

Result<std::int64_t> TextHeads(std::int64_t width, std::int64_t heads) {
  const std::int64_t count = heads > 0 ? heads : width / 64;
  if (count <= 0 || width % count != 0) {
    return Status::Error("text encoder width " + std::to_string(width) + " cannot be split into " +
                         std::to_string(count) + " heads of 64 channels, the rule of every "
                         "released CLIP; pass --config with a YAML that gives the head count");
  }
  return count;
}

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
  const std::string mask = b.ConstFloat32(mask_values, {n, n});

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
