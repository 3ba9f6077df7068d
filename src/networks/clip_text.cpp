#include "networks/clip_text.h"

#include <onnx/onnx_pb.h>

#include "graph/layers.h"
#include "networks/text_transformer.h"

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
  SDONNX_ASSIGN_OR_RETURN(TextShapes shapes,
                          ReadTextShapes(checkpoint, p + "embeddings.token_embedding.weight",
                                         p + "embeddings.position_embedding.weight",
                                         p + "encoder.layers.", ".layer_norm1.weight"));
  spec->vocab_size = shapes.vocab_size;
  spec->width = shapes.width;
  spec->context_length = shapes.context_length;
  spec->layers = shapes.layers;
  return Status::Ok();
}

Status BuildClipText(GraphBuilder& b, const ClipTextSpec& spec) {
  const std::string& p = spec.prefix;
  SDONNX_ASSIGN_OR_RETURN(const std::int64_t heads, TextHeads(spec.width, spec.heads));
  TextTransformerParts parts;
  parts.vocab_size = spec.vocab_size;
  parts.context_length = spec.context_length;
  parts.width = spec.width;
  parts.layers = spec.layers;
  parts.layer_norm_eps = spec.layer_norm_eps;
  parts.token_embedding_key = p + "embeddings.token_embedding.weight";
  parts.position_embedding_key = p + "embeddings.position_embedding.weight";
  parts.final_norm_prefix = p + "final_layer_norm";
  parts.layer = [&spec, &p, heads](GraphBuilder& g, const std::string& x, std::int64_t i,
                                   const std::string& mask) {
    return Layer(g, x, p + "encoder.layers." + std::to_string(i), spec, heads, mask);
  };
  BuildTextTransformer(b, parts);
  return b.status();
}

}  // namespace sdonnx
