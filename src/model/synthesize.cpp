#include "model/synthesize.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "formats/safetensors.h"

namespace sdonnx {
namespace {

using Shape = std::vector<std::int64_t>;

class LayoutWriter {
 public:
  explicit LayoutWriter(std::vector<TensorSpec>* out) : out_(out) {}
  void Add(const std::string& name, Shape shape, DType dtype = DType::kF32) {
    out_->push_back({name, dtype, std::move(shape)});
  }
  void Linear(const std::string& p, std::int64_t in, std::int64_t out, bool bias = true) {
    Add(p + ".weight", {out, in});
    if (bias) Add(p + ".bias", {out});
  }
  void Conv(const std::string& p, std::int64_t in, std::int64_t out, std::int64_t k) {
    Add(p + ".weight", {out, in, k, k});
    Add(p + ".bias", {out});
  }
  void Norm(const std::string& p, std::int64_t ch) {
    Add(p + ".weight", {ch});
    Add(p + ".bias", {ch});
  }

 private:
  std::vector<TensorSpec>* out_;
};

void UNetResBlock(LayoutWriter& w, const std::string& p, std::int64_t in, std::int64_t out,
                  std::int64_t emb) {
  w.Norm(p + ".in_layers.0", in);
  w.Conv(p + ".in_layers.2", in, out, 3);
  w.Linear(p + ".emb_layers.1", emb, out);
  w.Norm(p + ".out_layers.0", out);
  w.Conv(p + ".out_layers.3", out, out, 3);
  if (in != out) w.Conv(p + ".skip_connection", in, out, 1);
}

void UNetTransformer(LayoutWriter& w, const std::string& p, std::int64_t ch, std::int64_t context,
                     std::int64_t depth) {
  w.Norm(p + ".norm", ch);
  w.Conv(p + ".proj_in", ch, ch, 1);
  for (std::int64_t d = 0; d < depth; ++d) {
    const std::string blk = p + ".transformer_blocks." + std::to_string(d);
    for (const char* attn : {".attn1", ".attn2"}) {
      const std::int64_t kv_in = std::string(attn) == ".attn1" ? ch : context;
      w.Linear(blk + attn + ".to_q", ch, ch, false);
      w.Linear(blk + attn + ".to_k", kv_in, ch, false);
      w.Linear(blk + attn + ".to_v", kv_in, ch, false);
      w.Linear(blk + attn + ".to_out.0", ch, ch);
    }
    w.Linear(blk + ".ff.net.0.proj", ch, 8 * ch);
    w.Linear(blk + ".ff.net.2", 4 * ch, ch);
    for (const char* norm : {".norm1", ".norm2", ".norm3"}) w.Norm(blk + norm, ch);
  }
  w.Conv(p + ".proj_out", ch, ch, 1);
}

void UNetLayout(LayoutWriter& w, const Sd1Hyperparameters& h) {
  const std::string p = "model.diffusion_model.";
  const std::int64_t mc = h.model_channels;
  const std::int64_t emb = 4 * mc;
  auto has_attention = [&](std::size_t level) {
    return std::find(h.attention_levels.begin(), h.attention_levels.end(),
                     static_cast<std::int64_t>(level)) != h.attention_levels.end();
  };
  w.Linear(p + "time_embed.0", mc, emb);
  w.Linear(p + "time_embed.2", emb, emb);
  w.Conv(p + "input_blocks.0.0", h.in_channels, mc, 3);
  std::vector<std::int64_t> skip_channels = {mc};
  std::int64_t ch = mc;
  int index = 1;
  for (std::size_t level = 0; level < h.channel_mult.size(); ++level) {
    for (std::int64_t r = 0; r < h.num_res_blocks; ++r, ++index) {
      const std::string blk = p + "input_blocks." + std::to_string(index);
      const std::int64_t out = h.channel_mult[level] * mc;
      UNetResBlock(w, blk + ".0", ch, out, emb);
      ch = out;
      if (has_attention(level)) UNetTransformer(w, blk + ".1", ch, h.context_dim, h.transformer_depth);
      skip_channels.push_back(ch);
    }
    if (level + 1 != h.channel_mult.size()) {
      w.Conv(p + "input_blocks." + std::to_string(index++) + ".0.op", ch, ch, 3);
      skip_channels.push_back(ch);
    }
  }
  UNetResBlock(w, p + "middle_block.0", ch, ch, emb);
  UNetTransformer(w, p + "middle_block.1", ch, h.context_dim, h.transformer_depth);
  UNetResBlock(w, p + "middle_block.2", ch, ch, emb);
  index = 0;
  for (std::size_t level = h.channel_mult.size(); level-- > 0;) {
    for (std::int64_t r = 0; r <= h.num_res_blocks; ++r, ++index) {
      const std::string blk = p + "output_blocks." + std::to_string(index);
      const std::int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      const std::int64_t out = h.channel_mult[level] * mc;
      UNetResBlock(w, blk + ".0", ch + skip, out, emb);
      ch = out;
      int sub = 1;
      if (has_attention(level)) {
        UNetTransformer(w, blk + ".1", ch, h.context_dim, h.transformer_depth);
        sub = 2;
      }
      if (level > 0 && r == h.num_res_blocks) {
        w.Conv(blk + "." + std::to_string(sub) + ".conv", ch, ch, 3);
      }
    }
  }
  w.Norm(p + "out.0", ch);
  w.Conv(p + "out.2", mc, h.out_channels, 3);
}

void VaeResBlock(LayoutWriter& w, const std::string& p, std::int64_t in, std::int64_t out) {
  w.Norm(p + ".norm1", in);
  w.Conv(p + ".conv1", in, out, 3);
  w.Norm(p + ".norm2", out);
  w.Conv(p + ".conv2", out, out, 3);
  if (in != out) w.Conv(p + ".nin_shortcut", in, out, 1);
}

void VaeMiddle(LayoutWriter& w, const std::string& p, std::int64_t ch) {
  VaeResBlock(w, p + ".mid.block_1", ch, ch);
  w.Norm(p + ".mid.attn_1.norm", ch);
  for (const char* name : {".q", ".k", ".v", ".proj_out"}) {
    w.Conv(p + ".mid.attn_1" + name, ch, ch, 1);
  }
  VaeResBlock(w, p + ".mid.block_2", ch, ch);
}

void VaeLayout(LayoutWriter& w, const Sd1Hyperparameters& h) {
  const std::string p = "first_stage_model.";
  const auto levels = h.vae_ch_mult.size();
  w.Conv(p + "encoder.conv_in", 3, h.vae_ch, 3);
  std::int64_t ch = h.vae_ch;
  for (std::size_t i = 0; i < levels; ++i) {
    const std::string level = p + "encoder.down." + std::to_string(i);
    const std::int64_t out = h.vae_ch * h.vae_ch_mult[i];
    for (std::int64_t j = 0; j < h.vae_num_res_blocks; ++j) {
      VaeResBlock(w, level + ".block." + std::to_string(j), ch, out);
      ch = out;
    }
    if (i + 1 != levels) w.Conv(level + ".downsample.conv", ch, ch, 3);
  }
  VaeMiddle(w, p + "encoder", ch);
  w.Norm(p + "encoder.norm_out", ch);
  w.Conv(p + "encoder.conv_out", ch, 2 * h.z_channels, 3);
  w.Conv(p + "quant_conv", 2 * h.z_channels, 2 * h.z_channels, 1);
  w.Conv(p + "post_quant_conv", h.z_channels, h.z_channels, 1);
  ch = h.vae_ch * h.vae_ch_mult.back();
  w.Conv(p + "decoder.conv_in", h.z_channels, ch, 3);
  VaeMiddle(w, p + "decoder", ch);
  for (std::size_t i = levels; i-- > 0;) {
    const std::string level = p + "decoder.up." + std::to_string(i);
    const std::int64_t out = h.vae_ch * h.vae_ch_mult[i];
    for (std::int64_t j = 0; j <= h.vae_num_res_blocks; ++j) {
      VaeResBlock(w, level + ".block." + std::to_string(j), ch, out);
      ch = out;
    }
    if (i != 0) w.Conv(level + ".upsample.conv", ch, ch, 3);
  }
  w.Norm(p + "decoder.norm_out", ch);
  w.Conv(p + "decoder.conv_out", ch, 3, 3);
}

void ClipLayout(LayoutWriter& w, const Sd1Hyperparameters& h) {
  const std::string p = "cond_stage_model.transformer.text_model.";
  const std::int64_t width = h.text_width;
  w.Add(p + "embeddings.token_embedding.weight", {h.vocab_size, width});
  w.Add(p + "embeddings.position_embedding.weight", {h.context_length, width});
  w.Add(p + "embeddings.position_ids", {1, h.context_length}, DType::kI64);
  for (std::int64_t i = 0; i < h.text_layers; ++i) {
    const std::string layer = p + "encoder.layers." + std::to_string(i);
    for (const char* proj : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj",
                             ".self_attn.out_proj"}) {
      w.Linear(layer + proj, width, width);
    }
    w.Norm(layer + ".layer_norm1", width);
    w.Linear(layer + ".mlp.fc1", width, h.text_mlp_width);
    w.Linear(layer + ".mlp.fc2", h.text_mlp_width, width);
    w.Norm(layer + ".layer_norm2", width);
  }
  w.Norm(p + "final_layer_norm", width);
}

// A fast, seeded generator (splitmix64) of values in roughly N(0, 1).
class Noise {
 public:
  explicit Noise(std::uint64_t seed) : state_(seed) {}
  float Next() {
    // The sum of four uniforms has mean 2 and variance 1/3.
    float sum = 0;
    for (int i = 0; i < 4; ++i) sum += static_cast<float>(NextBits() >> 40) * 0x1p-24f;
    return (sum - 2.0f) * 1.7320508f;
  }

 private:
  std::uint64_t NextBits() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t state_;
};

void FillRandom(const TensorSpec& spec, std::span<std::uint8_t> out, std::uint64_t seed) {
  const std::size_t n = out.size() / DTypeSize(spec.dtype);
  if (spec.dtype == DType::kI64) {  // position_ids and other index buffers
    for (std::size_t i = 0; i < n; ++i) {
      const auto v = static_cast<std::int64_t>(i);
      std::memcpy(out.data() + 8 * i, &v, 8);
    }
    return;
  }
  if (!IsFloating(spec.dtype)) {
    std::memset(out.data(), 0, out.size());
    return;
  }
  const bool is_norm_weight = spec.shape.size() == 1 && spec.name.ends_with(".weight") &&
                              spec.name.find("norm") != std::string::npos;
  const bool is_bias = spec.shape.size() == 1 && !is_norm_weight;
  std::int64_t fan_in = 1;
  for (std::size_t i = 1; i < spec.shape.size(); ++i) fan_in *= spec.shape[i];
  const float scale = is_bias ? 0.02f : 1.0f / std::sqrt(static_cast<float>(fan_in));
  Noise noise(seed);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = is_norm_weight ? 1.0f + 0.02f * noise.Next() : scale * noise.Next();
    switch (spec.dtype) {
      case DType::kF32: std::memcpy(out.data() + 4 * i, &v, 4); break;
      case DType::kF16: {
        const std::uint16_t half = FloatToHalf(v);
        std::memcpy(out.data() + 2 * i, &half, 2);
        break;
      }
      case DType::kBF16: {
        const auto bits = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(v) >> 16);
        std::memcpy(out.data() + 2 * i, &bits, 2);
        break;
      }
      default: {
        const double d = v;
        std::memcpy(out.data() + 8 * i, &d, 8);
      }
    }
  }
}

}  // namespace

std::vector<TensorSpec> Sd1Layout(const Sd1Hyperparameters& h) {
  std::vector<TensorSpec> out;
  LayoutWriter w(&out);
  UNetLayout(w, h);
  VaeLayout(w, h);
  ClipLayout(w, h);
  for (const char* name :
       {"alphas_cumprod", "alphas_cumprod_prev", "betas", "log_one_minus_alphas_cumprod",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "posterior_variance", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod"}) {
    w.Add(name, {1000});
  }
  return out;
}

Sd1Hyperparameters DemoHyperparameters() {
  Sd1Hyperparameters h;
  h.model_channels = 32;
  h.channel_mult = {1, 2};
  h.num_res_blocks = 1;
  h.attention_levels = {0, 1};
  h.context_dim = 64;
  h.vae_ch = 32;
  h.vae_ch_mult = {1, 2};
  h.vae_num_res_blocks = 1;
  h.vocab_size = 49408;
  h.text_width = 64;
  h.text_layers = 2;
  h.text_mlp_width = 256;
  return h;
}

Result<std::vector<TensorSpec>> ReadManifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::Error(path + ": cannot open the manifest");
  std::vector<TensorSpec> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    std::istringstream fields(line);
    std::string name, dtype_name, shape_text;
    if (!std::getline(fields, name, '\t') || !std::getline(fields, dtype_name, '\t') ||
        !std::getline(fields, shape_text)) {
      return Status::Error(path + ":" + std::to_string(number) +
                           ": expected key<TAB>dtype<TAB>shape");
    }
    auto dtype = DTypeFromName(dtype_name);
    if (!dtype) {
      return Status::Error(path + ":" + std::to_string(number) + ": unknown dtype '" +
                           dtype_name + "'");
    }
    TensorSpec spec{name, *dtype, {}};
    if (shape_text != "scalar") {
      std::istringstream dims(shape_text);
      std::string dim;
      while (std::getline(dims, dim, 'x')) {
        std::size_t used = 0;
        long long value = -1;
        try {
          value = std::stoll(dim, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != dim.size() || value < 0) {
          return Status::Error(path + ":" + std::to_string(number) + ": shape '" + shape_text +
                               "' is not a list of non-negative integers joined by 'x'");
        }
        spec.shape.push_back(value);
      }
    }
    out.push_back(std::move(spec));
  }
  return out;
}

Status WriteSyntheticCheckpoint(const std::string& path, const std::vector<TensorSpec>& tensors,
                                FillMode fill, std::uint64_t seed) {
  std::vector<TensorToWrite> writes;
  writes.reserve(tensors.size());
  std::uint64_t index = 0;
  for (const TensorSpec& spec : tensors) {
    TensorToWrite t{spec.name, spec.dtype, spec.shape, {}, {}};
    if (fill == FillMode::kRandom) {
      const std::uint64_t tensor_seed = seed * 1000003ull + index;
      t.generate = [spec, tensor_seed](std::span<std::uint8_t> out) {
        FillRandom(spec, out, tensor_seed);
      };
    }
    writes.push_back(std::move(t));
    ++index;
  }
  return WriteSafetensors(path, writes, {{"format", "pt"}});
}

}  // namespace sdonnx
