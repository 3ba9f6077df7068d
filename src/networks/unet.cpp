#include "networks/unet.h"

#include <algorithm>

#include <onnx/onnx_pb.h>

#include <cmath>
#include <initializer_list>

#include "graph/layers.h"
#include "networks/vae.h"

namespace sdonnx {
namespace {

using layers::Conv2d;
using layers::GroupNorm;
using layers::LayerNorm;
using layers::Linear;
using layers::SiLU;

constexpr float kGroupNormEps = 1e-5f;
constexpr float kTransformerGroupNormEps = 1e-6f;
constexpr float kLayerNormEps = 1e-5f;

std::int64_t CountIndexed(const Checkpoint& checkpoint, const std::string& prefix,
                          const std::string& probe) {
  std::int64_t n = 0;
  while (checkpoint.Has(prefix + std::to_string(n) + probe)) ++n;
  return n;
}

// Sinusoidal timestep embedding of ldm's timestep_embedding: cos then sin of
// t * exp(-ln(10000) * i / half). The frequencies are computed in float32
// exactly as torch does, because t reaches 999 and amplifies their error.
// `timesteps` is float32; the embedding is computed in float32 and returned
// in the compute type.
std::string TimestepEmbedding(GraphBuilder& b, const std::string& timesteps, std::int64_t dim) {
  const std::int64_t half = dim / 2;
  std::vector<float> freqs(static_cast<std::size_t>(half));
  const float neg_log_period = static_cast<float>(-std::log(10000.0));
  for (std::int64_t i = 0; i < half; ++i) {
    float exponent = neg_log_period * static_cast<float>(i);
    exponent = exponent / static_cast<float>(half);
    freqs[static_cast<std::size_t>(i)] = std::exp(exponent);
  }
  const std::string column = b.Op("Reshape", {timesteps, b.ConstInt64({-1, 1}, {2})});
  const std::string args = b.Op("Mul", {column, b.ConstFloat32(freqs, {half})});
  std::string emb =
      b.Op("Concat", {b.Op("Cos", {args}), b.Op("Sin", {args})}, {{"axis", std::int64_t{1}}});
  if (dim % 2 == 1) {
    emb = b.Op("Pad", {emb, b.ConstInt64({0, 0, 0, 1}, {4})});
  }
  return b.ToCompute(emb);
}

std::string ResBlock(GraphBuilder& b, const std::string& x, const std::string& emb,
                     const std::string& p, std::int64_t groups) {
  std::string h = GroupNorm(b, x, p + ".in_layers.0", groups, kGroupNormEps);
  h = Conv2d(b, SiLU(b, h), p + ".in_layers.2");
  std::string e = Linear(b, SiLU(b, emb), p + ".emb_layers.1");
  e = b.Op("Reshape", {e, b.ConstInt64({0, -1, 1, 1}, {4})});
  h = b.Op("Add", {h, e});
  h = GroupNorm(b, h, p + ".out_layers.0", groups, kGroupNormEps);
  h = Conv2d(b, SiLU(b, h), p + ".out_layers.3");
  const std::string skip =
      b.HasWeight(p + ".skip_connection.weight") ? Conv2d(b, x, p + ".skip_connection") : x;
  return b.Op("Add", {skip, h});
}

std::string CrossAttention(GraphBuilder& b, const std::string& x, const std::string& context,
                           const std::string& p, std::int64_t heads,
                           std::int64_t query_chunks = 1) {
  const auto q_shape = b.WeightShape(p + ".to_q.weight");
  if (q_shape.size() != 2 || heads <= 0 || q_shape[0] % heads != 0) {
    b.Fail("tensor '" + p + ".to_q.weight' cannot be split into " + std::to_string(heads) +
           " heads");
    return x;
  }
  const std::string q = Linear(b, x, p + ".to_q", false);
  const std::string k = Linear(b, context, p + ".to_k", false);
  const std::string v = Linear(b, context, p + ".to_v", false);
  const std::string a =
      layers::Attention(b, q, k, v, heads, q_shape[0] / heads, "", query_chunks);
  return Linear(b, a, p + ".to_out.0");
}

std::string FeedForward(GraphBuilder& b, const std::string& x, const std::string& p) {
  // GEGLU: the projection's first half is the value, the second half the gate.
  const auto shape = b.WeightShape(p + ".net.0.proj.weight");
  if (shape.size() != 2 || shape[0] % 2 != 0) {
    b.Fail("tensor '" + p + ".net.0.proj.weight' should be 2-D with an even row count");
    return x;
  }
  const std::int64_t inner = shape[0] / 2;
  const std::string proj = Linear(b, x, p + ".net.0.proj");
  const std::string axis = b.ConstInt64({-1}, {1});
  const std::string value =
      b.Op("Slice", {proj, b.ConstInt64({0}, {1}), b.ConstInt64({inner}, {1}), axis});
  const std::string gate =
      b.Op("Slice", {proj, b.ConstInt64({inner}, {1}), b.ConstInt64({2 * inner}, {1}), axis});
  const std::string h = b.Op("Mul", {value, layers::Gelu(b, gate)});
  return Linear(b, h, p + ".net.2");
}

std::int64_t HeadsFor(const UNetSpec& spec, std::int64_t channels) {
  if (spec.num_head_channels > 0) return channels / spec.num_head_channels;
  return spec.num_heads;
}

// The query chunks of self-attention at `level` (0 at full resolution):
// the builder's count at the first level with transformers, and 16 times
// fewer per level below it, where sequences are 4 times shorter and the
// scores 16 times smaller.
std::int64_t QueryChunks(const GraphBuilder& b, const UNetSpec& spec, int level) {
  int first = 0;
  while (first < static_cast<int>(spec.transformer_depth.size()) &&
         spec.transformer_depth[static_cast<std::size_t>(first)] == 0) {
    ++first;
  }
  std::int64_t chunks = b.attention_chunks();
  for (int l = first; l < level && chunks > 1; ++l) chunks /= 16;
  return std::max<std::int64_t>(chunks, 1);
}

std::string SpatialTransformer(GraphBuilder& b, const std::string& x, const std::string& context,
                               const std::string& p, const UNetSpec& spec, int level) {
  const auto proj_shape = b.WeightShape(p + ".proj_in.weight");
  if (proj_shape.empty()) return x;
  const std::int64_t inner = proj_shape[0];
  const std::int64_t heads = HeadsFor(spec, inner);
  if (heads <= 0 || inner % heads != 0) {
    b.Fail(p + ": " + std::to_string(inner) + " channels cannot be split into " +
           std::to_string(heads) + " heads; check num_heads / num_head_channels in the config");
    return x;
  }
  std::string h = GroupNorm(b, x, p + ".norm", spec.group_norm_groups, kTransformerGroupNormEps);
  const std::vector<std::int64_t> swap = {0, 2, 1};
  auto to_sequence = [&](const std::string& v) {
    return b.Op("Transpose", {b.Op("Reshape", {v, b.ConstInt64({0, 0, -1}, {3})})},
                {{"perm", swap}});
  };
  if (spec.linear_projection) {
    h = Linear(b, to_sequence(h), p + ".proj_in");
  } else {
    h = to_sequence(Conv2d(b, h, p + ".proj_in"));
  }
  for (int i = 0; b.HasWeight(p + ".transformer_blocks." + std::to_string(i) + ".norm1.weight");
       ++i) {
    const std::string blk = p + ".transformer_blocks." + std::to_string(i);
    const std::string normed = LayerNorm(b, h, blk + ".norm1", kLayerNormEps);
    const std::int64_t chunks = QueryChunks(b, spec, level);
    if (!b.ort_attention()) b.NoteSelfAttention(level, heads, chunks);
    h = b.Op("Add", {CrossAttention(b, normed, normed, blk + ".attn1", heads, chunks), h});
    h = b.Op("Add", {CrossAttention(b, LayerNorm(b, h, blk + ".norm2", kLayerNormEps), context,
                                    blk + ".attn2", heads),
                     h});
    h = b.Op("Add", {FeedForward(b, LayerNorm(b, h, blk + ".norm3", kLayerNormEps), blk + ".ff"),
                     h});
  }
  const std::string spatial_shape =
      b.Op("Concat", {b.ConstInt64({0, -1}, {2}),
                      b.Op("Slice", {b.Op("Shape", {x}), b.ConstInt64({2}, {1}),
                                     b.ConstInt64({4}, {1})})},
           {{"axis", std::int64_t{0}}});
  auto to_spatial = [&](const std::string& v) {
    return b.Op("Reshape", {b.Op("Transpose", {v}, {{"perm", swap}}), spatial_shape});
  };
  if (spec.linear_projection) {
    h = to_spatial(Linear(b, h, p + ".proj_out"));
  } else {
    h = Conv2d(b, to_spatial(h), p + ".proj_out");
  }
  return b.Op("Add", {h, x});
}

// Nearest-neighbour upsampling to the spatial size of `like`, then the conv.
std::string Upsample(GraphBuilder& b, const std::string& x, const std::string& like,
                     const std::string& p) {
  const std::string axis0 = b.ConstInt64({0}, {1});
  const std::string sizes = b.Op(
      "Concat",
      {b.Op("Slice", {b.Op("Shape", {x}), axis0, b.ConstInt64({2}, {1})}),
       b.Op("Slice", {b.Op("Shape", {like}), b.ConstInt64({2}, {1}), b.ConstInt64({4}, {1})})},
      {{"axis", std::int64_t{0}}});
  const std::string up = b.Op("Resize", {x, "", "", sizes},
                              {{"mode", std::string("nearest")},
                               {"coordinate_transformation_mode", std::string("asymmetric")},
                               {"nearest_mode", std::string("floor")}});
  return Conv2d(b, up, p + ".conv");
}

// One entry of input_blocks, middle_block or output_blocks: a sequence of
// ResBlock, SpatialTransformer, Downsample and Upsample modules. `level`
// counts the downsamplings applied so far; the block updates it.
std::string RunBlock(GraphBuilder& b, std::string h, const std::string& emb,
                     const std::string& context, const std::string& block, const UNetSpec& spec,
                     const std::string& upsample_like, int& level) {
  for (int sub = 0;; ++sub) {
    const std::string p = block + "." + std::to_string(sub);
    if (b.HasWeight(p + ".in_layers.0.weight")) {
      h = ResBlock(b, h, emb, p, spec.group_norm_groups);
    } else if (b.HasWeight(p + ".proj_in.weight")) {
      h = SpatialTransformer(b, h, context, p, spec, level);
    } else if (b.HasWeight(p + ".op.weight")) {
      h = Conv2d(b, h, p + ".op", 2);
      ++level;
    } else if (b.HasWeight(p + ".conv.weight")) {
      h = Upsample(b, h, upsample_like.empty() ? h : upsample_like, p);
      --level;
    } else {
      break;
    }
  }
  return h;
}

// SDXL's label_emb applied to y = [text_embeds, embedding of each time id].
std::string LabelEmbedding(GraphBuilder& b, const UNetSpec& spec) {
  if (spec.text_embed_dim <= 0 || spec.num_time_ids <= 0 ||
      spec.text_embed_dim + spec.num_time_ids * spec.time_id_dim != spec.adm_in_channels) {
    b.Fail("label_emb takes " + std::to_string(spec.adm_in_channels) +
           " inputs, which do not split into a pooled text embedding and " +
           std::to_string(spec.time_id_dim) + "-wide time id embeddings");
    return "";
  }
  const std::string text_embeds = b.ToCompute(
      b.Input("text_embeds", onnx::TensorProto_DataType_FLOAT, {"batch", spec.text_embed_dim}));
  const std::string time_ids =
      b.Input("time_ids", onnx::TensorProto_DataType_FLOAT, {"batch", spec.num_time_ids});
  const std::string flat = b.Op("Reshape", {time_ids, b.ConstInt64({-1}, {1})});
  const std::string embedded = TimestepEmbedding(b, flat, spec.time_id_dim);
  const std::string per_row = b.Op(
      "Reshape", {embedded, b.ConstInt64({-1, spec.num_time_ids * spec.time_id_dim}, {2})});
  const std::string y =
      b.Op("Concat", {text_embeds, per_row}, {{"axis", std::int64_t{1}}});
  const std::string& p = spec.prefix;
  return Linear(b, SiLU(b, Linear(b, y, p + "label_emb.0.0")), p + "label_emb.0.2");
}

// The first dimension of the first of `keys` under `p` that has `rank`
// dimensions; 0 when none does.
std::int64_t LeadingDim(const Checkpoint& checkpoint, const std::string& p,
                        std::initializer_list<const char*> keys, std::size_t rank,
                        std::size_t dim = 0) {
  for (const char* key : keys) {
    const TensorInfo* t = checkpoint.Find(p + key);
    if (t != nullptr && t->shape.size() == rank) return t->shape[dim];
  }
  return 0;
}

// Whether a UNet with `latent` output channels can take `in` input
// channels: latent (base), 2 x latent (instruct-pix2pix) or 2 x latent + 1
// (inpainting). An unknown `in` (0) fits any count.
bool FitsInputChannels(std::int64_t latent, std::int64_t in) {
  return in == 0 || in == latent || in == 2 * latent || in == 2 * latent + 1;
}

// The latent channel count, which the output convolution's weight and bias
// both show. When they disagree, one of them is damaged, and the shape check
// should blame that one. The count that fits the input channels wins. If
// both or neither fit, the VAE's latent channels decide, then 4, the latent
// channels of every SD family. Without either tensor the input channels
// decide, and 4 when those are unknown too.
std::int64_t OutputChannels(const Checkpoint& checkpoint, const std::string& p,
                            std::int64_t in) {
  const std::int64_t weight = LeadingDim(checkpoint, p, {"out.2.weight"}, 4);
  const std::int64_t bias = LeadingDim(checkpoint, p, {"out.2.bias"}, 1);
  if (weight > 0 && (bias == 0 || bias == weight)) return weight;
  if (weight > 0) {
    const bool weight_fits = FitsInputChannels(weight, in);
    const bool bias_fits = FitsInputChannels(bias, in);
    if (weight_fits != bias_fits) return bias_fits ? bias : weight;
    const std::int64_t vae_latent =
        LeadingDim(checkpoint, kVaePrefix, {"post_quant_conv.weight"}, 4);
    if (vae_latent == weight || vae_latent == bias) return vae_latent;
    return bias == 4 ? bias : weight;
  }
  if (bias > 0) return bias;
  // Inpainting and instruct-pix2pix UNets take extra input channels.
  return in == 0 ? 4 : (in == 8 || in == 9) ? 4 : in;
}

// The output channels of the ResBlock under `block`, from whichever of its
// tensors is there.
const TensorInfo* ResBlockOutput(const Checkpoint& checkpoint, const std::string& block) {
  for (const char* key : {".0.out_layers.3.weight", ".0.in_layers.2.weight",
                          ".0.emb_layers.1.weight", ".0.out_layers.0.weight"}) {
    const TensorInfo* t = checkpoint.Find(block + key);
    if (t != nullptr && !t->shape.empty()) return t;
  }
  return nullptr;
}

}  // namespace

Status ReadUNetShapes(const Checkpoint& checkpoint, UNetSpec* spec) {
  const std::string& p = spec->prefix;
  // The input and output convolutions give the widths. Without them, the
  // time embedding or the output norm gives the model width, and the
  // channel counts default to the 4 latent channels of every SD family. So
  // a UNet missing one of them is reported as incomplete, not absent.
  spec->model_channels = LeadingDim(checkpoint, p, {"input_blocks.0.0.weight"}, 4);
  spec->in_channels = LeadingDim(checkpoint, p, {"input_blocks.0.0.weight"}, 4, 1);
  if (spec->model_channels == 0) {
    spec->model_channels = LeadingDim(checkpoint, p, {"time_embed.0.weight"}, 2, 1);
  }
  if (spec->model_channels == 0) {
    spec->model_channels = LeadingDim(checkpoint, p, {"out.0.weight"}, 1);
  }
  if (spec->model_channels == 0) {
    return Status::Error(checkpoint.path() + ": no UNet: tensor '" + p +
                         "input_blocks.0.0.weight' (the input convolution) is missing or not 4-D");
  }
  spec->out_channels = OutputChannels(checkpoint, p, spec->in_channels);
  if (spec->in_channels == 0) spec->in_channels = spec->out_channels;
  spec->channel_mult.clear();
  spec->transformer_depth.clear();
  std::int64_t res_in_level = 0;
  std::int64_t depth_in_level = 0;
  for (int i = 1;; ++i) {
    const std::string blk = p + "input_blocks." + std::to_string(i);
    if (const TensorInfo* out = ResBlockOutput(checkpoint, blk)) {
      if (res_in_level == 0) spec->channel_mult.push_back(out->shape[0] / spec->model_channels);
      ++res_in_level;
      const std::int64_t depth =
          CountIndexed(checkpoint, blk + ".1.transformer_blocks.", ".norm1.weight");
      depth_in_level = std::max(depth_in_level, depth);
      if (const TensorInfo* proj = checkpoint.Find(blk + ".1.proj_in.weight")) {
        spec->linear_projection = proj->shape.size() == 2;
      }
      continue;
    }
    if (res_in_level > 0) {
      spec->num_res_blocks = res_in_level;
      spec->transformer_depth.push_back(depth_in_level);
      res_in_level = 0;
      depth_in_level = 0;
    }
    if (!checkpoint.Has(blk + ".0.op.weight") && !checkpoint.Has(blk + ".0.op.bias")) break;
  }
  if (spec->channel_mult.empty()) {
    return Status::Error(checkpoint.path() + ": UNet has no residual blocks under '" + p +
                         "input_blocks.'");
  }
  if (const TensorInfo* label = checkpoint.Find(p + "label_emb.0.0.weight")) {
    if (label->shape.size() != 2) {
      return Status::Error(checkpoint.path() + ": tensor '" + p +
                           "label_emb.0.0.weight' should be 2-D");
    }
    spec->adm_in_channels = label->shape[1];
  }
  spec->middle_transformer_depth =
      CountIndexed(checkpoint, p + "middle_block.1.transformer_blocks.", ".norm1.weight");
  // The first cross-attention's key projection gives the context width.
  for (const std::string& block : {std::string("input_blocks."), std::string("output_blocks.")}) {
    for (int i = 0; i < 64 && spec->context_dim == 0; ++i) {
      const TensorInfo* k = checkpoint.Find(p + block + std::to_string(i) +
                                            ".1.transformer_blocks.0.attn2.to_k.weight");
      if (k != nullptr && k->shape.size() == 2) spec->context_dim = k->shape[1];
    }
  }
  if (const TensorInfo* k =
          checkpoint.Find(p + "middle_block.1.transformer_blocks.0.attn2.to_k.weight");
      spec->context_dim == 0 && k != nullptr && k->shape.size() == 2) {
    spec->context_dim = k->shape[1];
  }
  if (spec->adm_in_channels > 0) {
    // The pooled text embedding comes from the OpenCLIP encoder. The
    // refiner's context is that encoder alone, so with 5 time ids the
    // pooled width equals the context width. The base joins CLIP ViT-L and
    // OpenCLIP in its context and has 6 time ids.
    const bool refiner =
        spec->adm_in_channels - 5 * spec->time_id_dim == spec->context_dim;
    spec->num_time_ids = refiner ? 5 : 6;
    spec->text_embed_dim = spec->adm_in_channels - spec->num_time_ids * spec->time_id_dim;
  }
  return Status::Ok();
}

Status BuildUNet(GraphBuilder& b, const UNetSpec& spec) {
  const std::string& p = spec.prefix;
  const std::string sample = b.ToCompute(b.Input("sample", onnx::TensorProto_DataType_FLOAT,
                                                 {"batch", spec.in_channels, "height", "width"}));
  const std::string timestep =
      b.Input("timestep", onnx::TensorProto_DataType_FLOAT, {"timestep_count"});
  const std::string context =
      b.ToCompute(b.Input("encoder_hidden_states", onnx::TensorProto_DataType_FLOAT,
                          {"batch", "sequence", spec.context_dim}));

  const std::string batch = layers::ShapeDim(b, sample, 0);
  const std::string t = b.Op("Expand", {timestep, batch});
  std::string emb = TimestepEmbedding(b, t, spec.model_channels);
  emb = Linear(b, SiLU(b, Linear(b, emb, p + "time_embed.0")), p + "time_embed.2");
  if (spec.adm_in_channels > 0) emb = b.Op("Add", {emb, LabelEmbedding(b, spec)});

  std::vector<std::string> skips;
  std::string h = sample;
  int level = 0;
  for (int i = 0; b.HasWeight(p + "input_blocks." + std::to_string(i) + ".0.weight") ||
                  b.HasWeight(p + "input_blocks." + std::to_string(i) + ".0.in_layers.0.weight") ||
                  b.HasWeight(p + "input_blocks." + std::to_string(i) + ".0.op.weight");
       ++i) {
    const std::string blk = p + "input_blocks." + std::to_string(i);
    h = (i == 0) ? Conv2d(b, h, blk + ".0") : RunBlock(b, h, emb, context, blk, spec, "", level);
    skips.push_back(h);
  }
  h = RunBlock(b, h, emb, context, p + "middle_block", spec, "", level);
  int output_blocks = 0;
  for (int i = 0; b.HasWeight(p + "output_blocks." + std::to_string(i) + ".0.in_layers.0.weight");
       ++i, ++output_blocks) {
    if (skips.empty()) {
      return Status::Error("UNet: output block " + std::to_string(i) +
                           " has no matching input block to take its skip connection from");
    }
    h = b.Op("Concat", {h, skips.back()}, {{"axis", std::int64_t{1}}});
    skips.pop_back();
    const std::string next_skip = skips.empty() ? "" : skips.back();
    h = RunBlock(b, h, emb, context, p + "output_blocks." + std::to_string(i), spec, next_skip,
                 level);
  }
  if (!skips.empty()) {
    return Status::Error("UNet: tensor '" + p + "output_blocks." +
                         std::to_string(output_blocks) + ".0.in_layers.0.weight' is missing; " +
                         std::to_string(skips.size()) +
                         " skip connections have no output block (the checkpoint is incomplete)");
  }
  h = GroupNorm(b, h, p + "out.0", spec.group_norm_groups, kGroupNormEps);
  h = Conv2d(b, SiLU(b, h), p + "out.2");
  b.Output(h, "out_sample", onnx::TensorProto_DataType_FLOAT,
           {"batch", spec.out_channels, "height", "width"});
  return b.status();
}

}  // namespace sdonnx
