#include "model/expected_keys.h"

#include <algorithm>
#include <array>

namespace sdonnx {
namespace {

class KeyList {
 public:
  explicit KeyList(std::vector<std::string>* out) : out_(out) {}
  void Tensor(const std::string& name) { out_->push_back(name); }
  // A layer with a weight and a bias: Linear, Conv2d, GroupNorm, LayerNorm.
  void Layer(const std::string& prefix) {
    out_->push_back(prefix + ".weight");
    out_->push_back(prefix + ".bias");
  }

 private:
  std::vector<std::string>* out_;
};

void UNetResBlock(KeyList& keys, const std::string& p, bool has_skip_projection) {
  for (const char* layer : {".in_layers.0", ".in_layers.2", ".emb_layers.1", ".out_layers.0",
                            ".out_layers.3"}) {
    keys.Layer(p + layer);
  }
  if (has_skip_projection) keys.Layer(p + ".skip_connection");
}

void UNetTransformer(KeyList& keys, const std::string& p, std::int64_t depth) {
  keys.Layer(p + ".norm");
  keys.Layer(p + ".proj_in");
  for (std::int64_t d = 0; d < depth; ++d) {
    const std::string block = p + ".transformer_blocks." + std::to_string(d);
    for (const char* attention : {".attn1", ".attn2"}) {
      for (const char* projection : {".to_q", ".to_k", ".to_v"}) {
        keys.Tensor(block + attention + projection + ".weight");
      }
      keys.Layer(block + attention + ".to_out.0");
    }
    keys.Layer(block + ".ff.net.0.proj");
    keys.Layer(block + ".ff.net.2");
    for (const char* norm : {".norm1", ".norm2", ".norm3"}) keys.Layer(block + norm);
  }
  keys.Layer(p + ".proj_out");
}

std::int64_t DepthAt(const UNetSpec& u, std::size_t level) {
  return level < u.transformer_depth.size() ? u.transformer_depth[level] : 0;
}

// ldm's openaimodel.UNetModel and sgm's copy of it: the input blocks of
// each level, a downsampler between levels, the middle block, and one more
// output block per level than input blocks, the last with an upsampler.
std::vector<std::string> UNetKeys(const UNetSpec& u) {
  std::vector<std::string> out;
  KeyList keys(&out);
  const std::string& p = u.prefix;
  const std::int64_t mc = u.model_channels;
  keys.Layer(p + "time_embed.0");
  keys.Layer(p + "time_embed.2");
  if (u.adm_in_channels > 0) {
    keys.Layer(p + "label_emb.0.0");
    keys.Layer(p + "label_emb.0.2");
  }
  keys.Layer(p + "input_blocks.0.0");
  std::vector<std::int64_t> skip_channels = {mc};
  std::int64_t channels = mc;
  int index = 1;
  const std::size_t levels = u.channel_mult.size();
  for (std::size_t level = 0; level < levels; ++level) {
    const std::int64_t level_channels = u.channel_mult[level] * mc;
    for (std::int64_t r = 0; r < u.num_res_blocks; ++r, ++index) {
      const std::string block = p + "input_blocks." + std::to_string(index);
      UNetResBlock(keys, block + ".0", channels != level_channels);
      channels = level_channels;
      if (DepthAt(u, level) > 0) UNetTransformer(keys, block + ".1", DepthAt(u, level));
      skip_channels.push_back(channels);
    }
    if (level + 1 != levels) {
      keys.Layer(p + "input_blocks." + std::to_string(index++) + ".0.op");
      skip_channels.push_back(channels);
    }
  }
  UNetResBlock(keys, p + "middle_block.0", false);
  UNetTransformer(keys, p + "middle_block.1", u.middle_transformer_depth);
  UNetResBlock(keys, p + "middle_block.2", false);
  index = 0;
  for (std::size_t level = levels; level-- > 0;) {
    const std::int64_t level_channels = u.channel_mult[level] * mc;
    for (std::int64_t r = 0; r <= u.num_res_blocks; ++r, ++index) {
      const std::string block = p + "output_blocks." + std::to_string(index);
      const std::int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      UNetResBlock(keys, block + ".0", channels + skip != level_channels);
      channels = level_channels;
      int next = 1;
      if (DepthAt(u, level) > 0) UNetTransformer(keys, block + "." + std::to_string(next++),
                                                 DepthAt(u, level));
      if (level > 0 && r == u.num_res_blocks) {
        keys.Layer(block + "." + std::to_string(next) + ".conv");
      }
    }
  }
  keys.Layer(p + "out.0");
  keys.Layer(p + "out.2");
  return out;
}

// A VAE residual block has a 1x1 nin_shortcut only where its input and
// output widths differ, which its conv1 kernel shows.
void VaeResBlock(KeyList& keys, const Checkpoint& checkpoint, const std::string& p) {
  for (const char* layer : {".norm1", ".conv1", ".norm2", ".conv2"}) keys.Layer(p + layer);
  const TensorInfo* conv1 = checkpoint.Find(p + ".conv1.weight");
  if (conv1 != nullptr && conv1->shape.size() == 4 && conv1->shape[0] != conv1->shape[1]) {
    keys.Layer(p + ".nin_shortcut");
  }
}

void VaeMiddle(KeyList& keys, const Checkpoint& checkpoint, const std::string& p) {
  VaeResBlock(keys, checkpoint, p + ".mid.block_1");
  for (const char* layer : {".norm", ".q", ".k", ".v", ".proj_out"}) {
    keys.Layer(p + ".mid.attn_1" + layer);
  }
  VaeResBlock(keys, checkpoint, p + ".mid.block_2");
}

// The largest number of consecutive blocks "<prefix>L.block.N" over all levels.
std::int64_t CountVaeBlocks(const Checkpoint& checkpoint, const std::string& prefix,
                            std::int64_t levels) {
  std::int64_t most = 0;
  for (std::int64_t level = 0; level < levels; ++level) {
    std::int64_t n = 0;
    while (checkpoint.Has(prefix + std::to_string(level) + ".block." + std::to_string(n) +
                          ".conv1.weight")) {
      ++n;
    }
    most = std::max(most, n);
  }
  return most;
}

std::vector<std::string> VaeKeys(const Checkpoint& checkpoint, const VaeSpec& vae) {
  std::vector<std::string> out;
  KeyList keys(&out);
  const std::string& p = vae.prefix;
  const std::int64_t levels = vae.levels;
  // The decoder has one block more per level than the encoder.
  const std::int64_t blocks = std::max(CountVaeBlocks(checkpoint, p + "encoder.down.", levels),
                                       CountVaeBlocks(checkpoint, p + "decoder.up.", levels) - 1);
  keys.Layer(p + "encoder.conv_in");
  for (std::int64_t i = 0; i < levels; ++i) {
    const std::string level = p + "encoder.down." + std::to_string(i);
    for (std::int64_t j = 0; j < blocks; ++j) {
      VaeResBlock(keys, checkpoint, level + ".block." + std::to_string(j));
    }
    if (i + 1 != levels) keys.Layer(level + ".downsample.conv");
  }
  VaeMiddle(keys, checkpoint, p + "encoder");
  keys.Layer(p + "encoder.norm_out");
  keys.Layer(p + "encoder.conv_out");
  keys.Layer(p + "quant_conv");
  keys.Layer(p + "post_quant_conv");
  keys.Layer(p + "decoder.conv_in");
  VaeMiddle(keys, checkpoint, p + "decoder");
  for (std::int64_t i = levels; i-- > 0;) {
    const std::string level = p + "decoder.up." + std::to_string(i);
    for (std::int64_t j = 0; j <= blocks; ++j) {
      VaeResBlock(keys, checkpoint, level + ".block." + std::to_string(j));
    }
    if (i != 0) keys.Layer(level + ".upsample.conv");
  }
  keys.Layer(p + "decoder.norm_out");
  keys.Layer(p + "decoder.conv_out");
  return out;
}

std::vector<std::string> ClipKeys(const ClipTextSpec& text) {
  std::vector<std::string> out;
  KeyList keys(&out);
  const std::string& p = text.prefix;
  keys.Tensor(p + "embeddings.token_embedding.weight");
  keys.Tensor(p + "embeddings.position_embedding.weight");
  // CLIP ViT-L, the text encoder of SD 1.x and SDXL, has 12 layers; a file
  // with fewer has lost some.
  const std::int64_t layers = text.width == 768 ? std::max<std::int64_t>(text.layers, 12)
                                                : text.layers;
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string layer = p + "encoder.layers." + std::to_string(i);
    for (const char* name : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj",
                             ".self_attn.out_proj", ".layer_norm1", ".mlp.fc1", ".mlp.fc2",
                             ".layer_norm2"}) {
      keys.Layer(layer + name);
    }
  }
  keys.Layer(p + "final_layer_norm");
  return out;
}

// `layers` is the count to expect, which the caller chooses from the
// architecture and the family.
std::vector<std::string> OpenClipKeys(const OpenClipTextSpec& text, std::int64_t layers,
                                      bool needs_projection) {
  std::vector<std::string> out;
  KeyList keys(&out);
  const std::string& p = text.prefix;
  keys.Tensor(p + "token_embedding.weight");
  keys.Tensor(p + "positional_embedding");
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string block = p + "transformer.resblocks." + std::to_string(i);
    keys.Tensor(block + ".attn.in_proj_weight");
    keys.Tensor(block + ".attn.in_proj_bias");
    for (const char* name : {".attn.out_proj", ".ln_1", ".ln_2", ".mlp.c_fc", ".mlp.c_proj"}) {
      keys.Layer(block + name);
    }
  }
  keys.Layer(p + "ln_final");
  if (needs_projection) keys.Tensor(p + "text_projection");
  return out;
}

// The OpenCLIP layers a loader fills. SD 2.x never runs the last layer of
// ViT-H, so a file without it loads; SDXL's pooled output runs all of bigG.
std::int64_t OpenClipLayersToExpect(const OpenClipTextSpec& text, Family family) {
  if (text.full_layers == 0) return text.layers;
  if (family == Family::kSD2 && text.layers + 1 == text.full_layers) return text.layers;
  return std::max(text.layers, text.full_layers);
}

const std::array<const char*, 12> kScheduleBuffers = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2"};

}  // namespace

std::vector<TextEncoderSlot> TextEncoderSlots(Family family) {
  switch (family) {
    case Family::kSD1:
      return {{"text_encoder", "text encoder (CLIP ViT-L)", "cond_stage_model.transformer."}};
    case Family::kSD2:
      return {{"text_encoder", "text encoder (OpenCLIP ViT-H)", kSd2TextPrefix}};
    case Family::kSDXL:
      return {{"text_encoder", "text encoder 1 (CLIP ViT-L)", "conditioner.embedders.0.transformer."},
              {"text_encoder_2", "text encoder 2 (OpenCLIP ViT-bigG)",
               "conditioner.embedders.1.model."}};
    case Family::kSDXLRefiner:
      return {{"text_encoder_2", "text encoder (OpenCLIP ViT-bigG)",
               "conditioner.embedders.0.model."}};
  }
  return {};
}

std::vector<ExpectedComponent> ExpectedComponents(const Checkpoint& checkpoint,
                                                  const ModelSpec& spec) {
  std::vector<ExpectedComponent> components;
  ExpectedComponent unet{"unet", "UNet", spec.unet.prefix, true, UNetKeys(spec.unet)};
  components.push_back(std::move(unet));

  ExpectedComponent vae{"vae", "VAE", kVaePrefix, spec.vae.has_value(), {}};
  if (spec.vae) vae.required = VaeKeys(checkpoint, *spec.vae);
  components.push_back(std::move(vae));

  const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
  for (const TextEncoderSlot& slot : TextEncoderSlots(spec.family)) {
    ExpectedComponent text{slot.name, slot.title, slot.prefix, false, {}};
    if (spec.text && spec.text->prefix.starts_with(slot.prefix)) {
      text.present = true;
      text.required = ClipKeys(*spec.text);
    } else if (spec.open_clip && spec.open_clip->prefix.starts_with(slot.prefix)) {
      text.present = true;
      text.required = OpenClipKeys(*spec.open_clip,
                                   OpenClipLayersToExpect(*spec.open_clip, spec.family), sdxl);
    } else if (spec.text && slot.name == "text_encoder" && spec.family != Family::kSD2) {
      text.present = true;
      text.stored_prefix = spec.text->prefix;
      text.required = ClipKeys(*spec.text);
    } else {
      text.present = checkpoint.HasPrefix(slot.prefix);
    }
    components.push_back(std::move(text));
  }
  return components;
}

bool IsKnownOptionalKey(const std::string& key, Family family) {
  if (key.ends_with("embeddings.position_ids") || key.ends_with(".logit_scale")) return true;
  if (family == Family::kSD2 && key == std::string(kSd2TextPrefix) + "text_projection") {
    return true;
  }
  if (key.starts_with("model_ema.") || key == "denoiser.sigmas") return true;
  if (key == "v_pred" || key.starts_with("edm_vpred.")) return true;
  return std::find(kScheduleBuffers.begin(), kScheduleBuffers.end(), key) !=
         kScheduleBuffers.end();
}

}  // namespace sdonnx
