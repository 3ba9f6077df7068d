#include "networks/clip_text.h"

#include <onnx/onnx_pb.h>

#include <limits>

#include "graph/layers.h"

namespace sdonnx {
namespace {

using layers::LayerNorm;
using layers::Linear;

std::string Layer(GraphBuilder& b, const std::string& x, const std::string& p,
                  const ClipTextSpec& spec, std::int64_t heads, const std::string& mask) {
  std::string h = LayerNorm(b, x, p + ".layer_norm1", spec.layer_norm_eps);
  const std::string q = Linear(b, h, p + ".self_attn.q_proj");
  const std::string k = Linear(b, h, p + ".self_attn.k_proj");
  const std::string v = Linear(b, h, p + ".self_attn.v_proj");
  h = layers::Attention(b, q, k, v, heads, spec.width / heads, mask);
  const std::string attended = b.Op("Add", {x, Linear(b, h, p + ".self_attn.out_proj")});
  h = LayerNorm(b, attended, p + ".layer_norm2", spec.layer_norm_eps);
  h = Linear(b, h, p + ".mlp.fc1");
  h = spec.quick_gelu ? layers::QuickGelu(b, h) : layers::Gelu(b, h);
  return b.Op("Add", {attended, Linear(b, h, p + ".mlp.fc2")});
}

}  // namespace

Status ReadClipTextShapes(const Checkpoint& checkpoint, ClipTextSpec* spec) {
  const std::string& p = spec->prefix;
  const TensorInfo* tokens = checkpoint.Find(p + "embeddings.token_embedding.weight");
  const TensorInfo* positions = checkpoint.Find(p + "embeddings.position_embedding.weight");
  if (tokens == nullptr || tokens->shape.size() != 2) {
    return Status::Error(checkpoint.path() + ": text encoder tensor '" + p +
                         "embeddings.token_embedding.weight' is missing or not 2-D");
  }
  if (positions == nullptr || positions->shape.size() != 2 ||
      positions->shape[1] != tokens->shape[1]) {
    return Status::Error(checkpoint.path() + ": text encoder tensor '" + p +
                         "embeddings.position_embedding.weight' is missing or its width differs "
                         "from the token embedding's " + std::to_string(tokens->shape[1]));
  }
  spec->vocab_size = tokens->shape[0];
  spec->width = tokens->shape[1];
  spec->context_length = positions->shape[0];
  spec->layers = 0;
  while (checkpoint.Has(p + "encoder.layers." + std::to_string(spec->layers) +
                        ".layer_norm1.weight")) {
    ++spec->layers;
  }
  if (spec->layers == 0) {
    return Status::Error(checkpoint.path() + ": text encoder has no layers under '" + p +
                         "encoder.layers.0'");
  }
  return Status::Ok();
}

Status BuildClipText(GraphBuilder& b, const ClipTextSpec& spec) {
  const std::string& p = spec.prefix;
  const std::int64_t heads = spec.heads > 0 ? spec.heads : spec.width / 64;
  if (heads <= 0 || spec.width % heads != 0) {
    return Status::Error("text encoder width " + std::to_string(spec.width) +
                         " cannot be split into " + std::to_string(heads) +
                         " heads; set the head count in the config");
  }
  const std::int64_t n = spec.context_length;
  const std::string ids =
      b.Input("input_ids", onnx::TensorProto_DataType_INT32, {"batch", n});
  const std::string table =
      b.Weight(p + "embeddings.token_embedding.weight", {spec.vocab_size, spec.width});
  std::string h = b.Op("Gather", {table, ids}, {{"axis", std::int64_t{0}}});
  h = b.Op("Add", {h, b.Weight(p + "embeddings.position_embedding.weight", {n, spec.width})});

  // Causal mask: position i attends to positions 0..i.
  std::vector<float> mask_values(static_cast<std::size_t>(n * n), 0.0f);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = i + 1; j < n; ++j) {
      mask_values[static_cast<std::size_t>(i * n + j)] = -std::numeric_limits<float>::infinity();
    }
  }
  const std::string mask = b.ConstFloat(mask_values, {n, n});

  const std::vector<Dim> state_dims = {"batch", n, spec.width};
  std::vector<std::string> states = {h};
  b.Output(h, "hidden_states.0", onnx::TensorProto_DataType_FLOAT, state_dims);
  for (std::int64_t i = 0; i < spec.layers; ++i) {
    h = Layer(b, h, p + "encoder.layers." + std::to_string(i), spec, heads, mask);
    states.push_back(h);
    b.Output(h, "hidden_states." + std::to_string(i + 1), onnx::TensorProto_DataType_FLOAT,
             state_dims);
  }
  const std::string last = LayerNorm(b, h, p + "final_layer_norm", spec.layer_norm_eps);
  b.Output(last, "last_hidden_state", onnx::TensorProto_DataType_FLOAT, state_dims);
  // Clip skip N (AUTOMATIC1111): the final layer norm applied to the output
  // of layer L + 1 - N; clip skip 1 is last_hidden_state itself.
  for (std::int64_t skip = 2; skip <= spec.layers; ++skip) {
    const std::string& state = states[static_cast<std::size_t>(spec.layers + 1 - skip)];
    b.Output(LayerNorm(b, state, p + "final_layer_norm", spec.layer_norm_eps),
             "clip_skip_" + std::to_string(skip), onnx::TensorProto_DataType_FLOAT, state_dims);
  }

  const std::string eot =
      b.Op("ArgMax", {ids}, {{"axis", std::int64_t{1}}, {"keepdims", std::int64_t{1}}});
  const std::string pooled = b.Op("GatherND", {last, eot}, {{"batch_dims", std::int64_t{1}}});
  b.Output(pooled, "pooler_output", onnx::TensorProto_DataType_FLOAT, {"batch", spec.width});
  return b.status();
}

}  // namespace sdonnx
