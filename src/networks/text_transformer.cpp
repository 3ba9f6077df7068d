#include "networks/text_transformer.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "graph/layers.h"

namespace sdonnx {

namespace {

// The first dimension `dim` of the first tensor in `keys` that exists with
// `rank` dimensions; 0 when none does.
std::int64_t FirstDim(const Checkpoint& checkpoint, const std::vector<std::string>& keys,
                      std::size_t rank, std::size_t dim) {
  for (const std::string& key : keys) {
    const TensorInfo* t = checkpoint.Find(key);
    if (t != nullptr && t->shape.size() == rank) return t->shape[dim];
  }
  return 0;
}

// One more than the largest N of any key "<layer_prefix>N.*", so that a
// layer missing some or all of its tensors still counts when a later one
// exists.
std::int64_t CountLayers(const Checkpoint& checkpoint, const std::string& layer_prefix) {
  std::int64_t layers = 0;
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (!t.name.starts_with(layer_prefix)) continue;
    const std::string rest = t.name.substr(layer_prefix.size());
    const std::size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos ||
        rest.find_first_not_of("0123456789") != dot || dot > 6) {
      continue;
    }
    layers = std::max<std::int64_t>(layers, std::stoll(rest.substr(0, dot)) + 1);
  }
  return layers;
}

}  // namespace

Result<TextShapes> ReadTextShapes(const Checkpoint& checkpoint, const std::string& token_key,
                                  const std::string& position_key, const std::string& layer_prefix,
                                  const std::string& layer_probe) {
  const TensorInfo* tokens = checkpoint.Find(token_key);
  const TensorInfo* positions = checkpoint.Find(position_key);
  if (tokens != nullptr && tokens->shape.size() != 2) tokens = nullptr;
  if (positions != nullptr && positions->shape.size() != 2) positions = nullptr;
  if (tokens != nullptr && positions != nullptr && positions->shape[1] != tokens->shape[1]) {
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
  // A missing embedding leaves the encoder present but incomplete: its
  // sizes then come from the other tensors and the CLIP defaults (49408
  // tokens, 77 positions), and the missing tensor is reported by name
  // where it is needed.
  TextShapes shapes;
  shapes.vocab_size = tokens != nullptr ? tokens->shape[0] : 49408;
  shapes.context_length = positions != nullptr ? positions->shape[0] : 77;
  if (tokens != nullptr) {
    shapes.width = tokens->shape[1];
  } else if (positions != nullptr) {
    shapes.width = positions->shape[1];
  } else {
    shapes.width = FirstDim(checkpoint, {layer_prefix + "0" + layer_probe}, 1, 0);
  }
  shapes.layers = CountLayers(checkpoint, layer_prefix);
  if (shapes.width == 0) {
    return Status::Error(checkpoint.path() + ": the text encoder's width cannot be read: '" +
                         token_key + "', '" + position_key + "' and '" + layer_prefix + "0" +
                         layer_probe + "' are all missing or malformed; the file is damaged: "
                         "download it again or use the original checkpoint");
  }
  if (shapes.layers == 0) {
    return Status::Error(checkpoint.path() + ": text encoder has no layers under '" + layer_prefix +
                         "0'");
  }
  return shapes;
}

Result<std::int64_t> TextHeads(std::int64_t width, std::int64_t heads) {
  const std::int64_t count = heads > 0 ? heads : width / 64;
  if (heads > 0 && width % heads != 0) {
    return Status::Error("text encoder width " + std::to_string(width) + " cannot be split into " +
                         std::to_string(heads) + " heads; check the head count in --config");
  }
  if (count <= 0 || width % count != 0) {
    return Status::Error("text encoder width " + std::to_string(width) +
                         " is not a multiple of 64, the head width of every released CLIP, so "
                         "the head count is unknown; pass --config with the checkpoint's YAML "
                         "config, or put it beside the checkpoint under the same name (.yaml)");
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
