#include "networks/vae.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <initializer_list>

#include "graph/layers.h"

namespace sdonnx {
namespace {

using layers::Conv2d;
using layers::GroupNorm;
using layers::SiLU;

constexpr float kGroupNormEps = 1e-6f;

std::string ResnetBlock(GraphBuilder& b, const std::string& x, const std::string& p,
                        std::int64_t groups) {
  std::string h = Conv2d(b, SiLU(b, GroupNorm(b, x, p + ".norm1", groups, kGroupNormEps)),
                         p + ".conv1");
  h = Conv2d(b, SiLU(b, GroupNorm(b, h, p + ".norm2", groups, kGroupNormEps)), p + ".conv2");
  std::string skip = x;
  if (b.HasWeight(p + ".nin_shortcut.weight")) skip = Conv2d(b, x, p + ".nin_shortcut");
  if (b.HasWeight(p + ".conv_shortcut.weight")) skip = Conv2d(b, x, p + ".conv_shortcut");
  return b.Op("Add", {skip, h});
}

// A 1x1 projection on [B, HW, C]. Original checkpoints store it as a 1x1
// Conv kernel [C, C, 1, 1]; files that went through diffusers store [C, C].
std::string PointwiseOnSequence(GraphBuilder& b, const std::string& seq, const std::string& p) {
  const auto shape = b.WeightShape(p + ".weight");
  if (shape.size() == 4 && shape[2] == 1 && shape[3] == 1) {
    const std::string w = b.Op("Reshape", {b.Weight(p + ".weight"), b.ConstInt64({0, 0}, {2})});
    const std::string wt = b.Op("Transpose", {w}, {{"perm", std::vector<std::int64_t>{1, 0}}});
    return b.Op("Add", {b.Op("MatMul", {seq, wt}), b.Weight(p + ".bias")});
  }
  return layers::Linear(b, seq, p);
}

// ldm's AttnBlock: single-head self-attention over all pixels.
std::string AttnBlock(GraphBuilder& b, const std::string& x, const std::string& p,
                      std::int64_t groups) {
  const auto norm_shape = b.WeightShape(p + ".norm.weight");
  if (norm_shape.size() != 1) return x;
  const std::int64_t channels = norm_shape[0];
  const std::string h = GroupNorm(b, x, p + ".norm", groups, kGroupNormEps);
  const std::string seq = b.Op("Transpose", {b.Op("Reshape", {h, b.ConstInt64({0, 0, -1}, {3})})},
                               {{"perm", std::vector<std::int64_t>{0, 2, 1}}});
  const std::string q = PointwiseOnSequence(b, seq, p + ".q");
  const std::string k = PointwiseOnSequence(b, seq, p + ".k");
  const std::string v = PointwiseOnSequence(b, seq, p + ".v");
  std::string out = layers::Attention(b, q, k, v, 1, channels, "", b.attention_chunks());
  out = PointwiseOnSequence(b, out, p + ".proj_out");
  out = b.Op("Reshape", {b.Op("Transpose", {out}, {{"perm", std::vector<std::int64_t>{0, 2, 1}}}),
                         b.Op("Shape", {x})});
  return b.Op("Add", {x, out});
}

std::string Level(GraphBuilder& b, std::string h, const std::string& p, std::int64_t groups) {
  for (int j = 0; b.HasWeight(p + ".block." + std::to_string(j) + ".conv1.weight"); ++j) {
    h = ResnetBlock(b, h, p + ".block." + std::to_string(j), groups);
    const std::string attn = p + ".attn." + std::to_string(j);
    if (b.HasWeight(attn + ".norm.weight")) h = AttnBlock(b, h, attn, groups);
  }
  return h;
}

std::string Middle(GraphBuilder& b, std::string h, const std::string& p, std::int64_t groups) {
  h = ResnetBlock(b, h, p + ".mid.block_1", groups);
  // The middle block runs at the latent resolution, in the encoder and the
  // decoder alike.
  if (!b.ort_attention() && b.HasWeight(p + ".mid.attn_1.norm.weight")) {
    b.NoteSelfAttention(0, 1, b.attention_chunks());
  }
  h = AttnBlock(b, h, p + ".mid.attn_1", groups);
  return ResnetBlock(b, h, p + ".mid.block_2", groups);
}

// Dimension `dim` of the first of `keys` stored as a 4-D convolution kernel,
// divided by `divisor`; 0 when none is.
std::int64_t ConvDim(const Checkpoint& checkpoint, const std::string& p,
                     std::initializer_list<const char*> keys, std::size_t dim,
                     std::int64_t divisor = 1) {
  for (const char* key : keys) {
    const TensorInfo* t = checkpoint.Find(p + key);
    if (t != nullptr && t->shape.size() == 4) return t->shape[dim] / divisor;
  }
  return 0;
}

// Whether level `level` of the encoder or the decoder has a first block.
bool HasLevel(const Checkpoint& checkpoint, const std::string& p, std::int64_t level) {
  for (const char* side : {"encoder.down.", "decoder.up."}) {
    for (const char* tensor : {"conv1.weight", "conv2.weight", "norm1.weight", "norm2.weight"}) {
      if (checkpoint.Has(p + side + std::to_string(level) + ".block.0." + tensor)) return true;
    }
  }
  return false;
}

// Notes the widest tensor of the level at the image's full resolution: the
// input or output of one of its resnet blocks.
void NoteFullResolutionLevel(GraphBuilder& b, const std::string& level) {
  for (int j = 0; b.HasWeight(level + ".block." + std::to_string(j) + ".conv1.weight"); ++j) {
    const auto shape = b.WeightShape(level + ".block." + std::to_string(j) + ".conv1.weight");
    if (shape.size() == 4) b.NoteFullResolutionChannels(std::max(shape[0], shape[1]));
  }
}

}  // namespace

Status ReadVaeShapes(const Checkpoint& checkpoint, VaeSpec* spec) {
  const std::string& p = spec->prefix;
  // Each size has a first source and fallbacks in the other half of the
  // VAE. So a VAE missing a tensor, or its whole encoder, is still read,
  // and the missing tensors are reported by name where they are needed.
  spec->base_channels = ConvDim(checkpoint, p, {"encoder.conv_in.weight"}, 0);
  if (spec->base_channels == 0) {
    spec->base_channels =
        ConvDim(checkpoint, p, {"encoder.down.0.block.0.conv1.weight", "decoder.conv_out.weight"},
                1);
  }
  const std::int64_t image_channels = ConvDim(checkpoint, p, {"encoder.conv_in.weight"}, 1);
  spec->image_channels = image_channels != 0 ? image_channels
                                             : ConvDim(checkpoint, p, {"decoder.conv_out.weight"}, 0);
  if (spec->image_channels == 0) spec->image_channels = 3;
  spec->latent_channels = ConvDim(checkpoint, p, {"post_quant_conv.weight", "decoder.conv_in.weight"}, 1);
  if (spec->latent_channels == 0) {
    spec->latent_channels =
        ConvDim(checkpoint, p, {"quant_conv.weight", "encoder.conv_out.weight"}, 0, 2);
  }
  if (spec->base_channels == 0 || spec->latent_channels == 0) {
    const char* what = spec->base_channels == 0 ? "base width" : "latent channel count";
    return Status::Error(checkpoint.path() + ": the VAE's " + what + " cannot be read: its "
                         "input and output convolutions under '" + p + "' are missing or not "
                         "4-D convolution kernels; the file is damaged: download it again or "
                         "use the original checkpoint");
  }
  spec->levels = 0;
  std::int64_t downsamplers = 0;
  std::int64_t upsamplers = 0;
  for (; HasLevel(checkpoint, p, spec->levels); ++spec->levels) {
    const std::string level = std::to_string(spec->levels);
    if (checkpoint.Has(p + "encoder.down." + level + ".downsample.conv.weight")) ++downsamplers;
    if (checkpoint.Has(p + "decoder.up." + level + ".upsample.conv.weight")) ++upsamplers;
  }
  if (spec->levels == 0) {
    return Status::Error(checkpoint.path() + ": VAE has no blocks under '" + p +
                         "encoder.down.0.block.0' or '" + p + "decoder.up.0.block.0'");
  }
  spec->downsample_factor = std::int64_t{1} << std::max(downsamplers, upsamplers);
  return Status::Ok();
}

Status BuildVaeEncoder(GraphBuilder& b, const VaeSpec& spec) {
  const std::string& p = spec.prefix;
  const std::int64_t f = spec.downsample_factor;
  const std::string image = b.ToCompute(b.Input("sample", onnx::TensorProto_DataType_FLOAT,
                                                {"batch", spec.image_channels, "height", "width"}));
  std::string h = Conv2d(b, image, p + "encoder.conv_in");
  NoteFullResolutionLevel(b, p + "encoder.down.0");
  for (std::int64_t i = 0; i < spec.levels; ++i) {
    const std::string level = p + "encoder.down." + std::to_string(i);
    h = Level(b, h, level, spec.group_norm_groups);
    if (b.HasWeight(level + ".downsample.conv.weight")) {
      // ldm pads right and bottom by one pixel, then convolves without padding.
      h = Conv2d(b, h, level + ".downsample.conv", 2, {0, 0, 1, 1});
    }
  }
  h = Middle(b, h, p + "encoder", spec.group_norm_groups);
  h = GroupNorm(b, h, p + "encoder.norm_out", spec.group_norm_groups, kGroupNormEps);
  h = Conv2d(b, SiLU(b, h), p + "encoder.conv_out");
  h = Conv2d(b, h, p + "quant_conv");
  const std::string height = f == 1 ? "height" : "height/" + std::to_string(f);
  const std::string width = f == 1 ? "width" : "width/" + std::to_string(f);
  b.Output(h, "latent_parameters", onnx::TensorProto_DataType_FLOAT,
           {"batch", 2 * spec.latent_channels, height, width});
  return b.status();
}

Status BuildVaeDecoder(GraphBuilder& b, const VaeSpec& spec) {
  const std::string& p = spec.prefix;
  const std::string latent =
      b.ToCompute(b.Input("latent_sample", onnx::TensorProto_DataType_FLOAT,
                          {"batch", spec.latent_channels, "latent_height", "latent_width"}));
  std::string h = Conv2d(b, latent, p + "post_quant_conv");
  h = Conv2d(b, h, p + "decoder.conv_in");
  h = Middle(b, h, p + "decoder", spec.group_norm_groups);
  NoteFullResolutionLevel(b, p + "decoder.up.0");
  for (std::int64_t i = spec.levels - 1; i >= 0; --i) {
    const std::string level = p + "decoder.up." + std::to_string(i);
    h = Level(b, h, level, spec.group_norm_groups);
    if (b.HasWeight(level + ".upsample.conv.weight")) {
      const std::string up = b.Op("Resize", {h, "", b.ConstFloat32({1, 1, 2, 2}, {4})},
                                  {{"mode", std::string("nearest")},
                                   {"coordinate_transformation_mode", std::string("asymmetric")},
                                   {"nearest_mode", std::string("floor")}});
      h = Conv2d(b, up, level + ".upsample.conv");
    }
  }
  h = GroupNorm(b, h, p + "decoder.norm_out", spec.group_norm_groups, kGroupNormEps);
  h = Conv2d(b, SiLU(b, h), p + "decoder.conv_out");
  const std::int64_t f = spec.downsample_factor;
  b.Output(h, "sample", onnx::TensorProto_DataType_FLOAT,
           {"batch", spec.image_channels, f == 1 ? "latent_height" : std::to_string(f) + "*latent_height",
            f == 1 ? "latent_width" : std::to_string(f) + "*latent_width"});
  return b.status();
}

}  // namespace sdonnx
