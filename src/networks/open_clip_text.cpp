#include "networks/open_clip_text.h"

#include <onnx/onnx_pb.h>

#include "graph/layers.h"
#include "networks/text_transformer.h"

namespace sdonnx {
namespace {

using layers::LayerNorm;
using layers::Linear;

std::string SliceLast(GraphBuilder& b, const std::string& x, std::int64_t begin, std::int64_t end) {
  return b.Op("Slice",
              {x, b.ConstInt64({begin}, {1}), b.ConstInt64({end}, {1}), b.ConstInt64({-1}, {1})});
}

std::string ResidualBlock(GraphBuilder& b, const std::string& x, const std::string& p,
                          const OpenClipTextSpec& spec, std::int64_t heads,
                          const std::string& mask) {
  const std::int64_t w = spec.width;
  std::string h = LayerNorm(b, x, p + ".ln_1", spec.layer_norm_eps);
  // One MatMul against the packed [3w, w] projection, then split q, k, v.
  const std::string qkv =
      layers::LinearWithKeys(b, h, p + ".attn.in_proj_weight", p + ".attn.in_proj_bias");
  h = layers::Attention(b, SliceLast(b, qkv, 0, w), SliceLast(b, qkv, w, 2 * w),
                        SliceLast(b, qkv, 2 * w, 3 * w), heads, w / heads, mask);
  const std::string attended = b.Op("Add", {x, Linear(b, h, p + ".attn.out_proj")});
  h = LayerNorm(b, attended, p + ".ln_2", spec.layer_norm_eps);
  h = layers::Gelu(b, Linear(b, h, p + ".mlp.c_fc"));
  return b.Op("Add", {attended, Linear(b, h, p + ".mlp.c_proj")});
}

}  // namespace

Status ReadOpenClipTextShapes(const Checkpoint& checkpoint, OpenClipTextSpec* spec) {
  const std::string& p = spec->prefix;
  SDONNX_ASSIGN_OR_RETURN(
      TextShapes shapes,
      ReadTextShapes(checkpoint, p + "token_embedding.weight", p + "positional_embedding",
                     p + "transformer.resblocks.", ".ln_1.weight"));
  spec->vocab_size = shapes.vocab_size;
  spec->width = shapes.width;
  spec->context_length = shapes.context_length;
  spec->layers = shapes.layers;
  const TensorInfo* projection = checkpoint.Find(p + "text_projection");
  spec->has_projection =
      projection != nullptr && projection->shape.size() == 2 && projection->shape[0] == spec->width;
  return Status::Ok();
}

Status BuildOpenClipText(GraphBuilder& b, const OpenClipTextSpec& spec) {
  const std::string& p = spec.prefix;
  SDONNX_ASSIGN_OR_RETURN(const std::int64_t heads, TextHeads(spec.width, spec.heads));
  TextTransformerParts parts;
  parts.vocab_size = spec.vocab_size;
  parts.context_length = spec.context_length;
  parts.width = spec.width;
  parts.layers = spec.layers;
  parts.layer_norm_eps = spec.layer_norm_eps;
  parts.token_embedding_key = p + "token_embedding.weight";
  parts.position_embedding_key = p + "positional_embedding";
  parts.final_norm_prefix = p + "ln_final";
  parts.layer = [&spec, &p, heads](GraphBuilder& g, const std::string& x, std::int64_t i,
                                   const std::string& mask) {
    return ResidualBlock(g, x, p + "transformer.resblocks." + std::to_string(i), spec, heads, mask);
  };
  const std::string pooled = BuildTextTransformer(b, parts);
  if (spec.has_projection) {
    // open_clip multiplies by text_projection as stored: [width, projection_dim].
    const std::string projection = b.Weight(p + "text_projection");
    const std::int64_t projection_dim = b.WeightShape(p + "text_projection")[1];
    b.Output(b.Op("MatMul", {pooled, projection}), "text_embeds", onnx::TensorProto_DataType_FLOAT,
             {"batch", projection_dim});
  }
  return b.status();
}

}  // namespace sdonnx
