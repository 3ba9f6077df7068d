#include "model/expected_keys.h"

#include <algorithm>
#include <array>
#include <map>

namespace sdonnx {
namespace {

using Shape = std::vector<std::int64_t>;

// The keys of one component, each with its expected shape.
struct KeyShapes {
  std::vector<std::string> keys;
  std::vector<Shape> shapes;
};

class KeyList {
 public:
  explicit KeyList(KeyShapes* out) : out_(out) {}
  void Tensor(const std::string& name, Shape shape) {
    out_->keys.push_back(name);
    out_->shapes.push_back(std::move(shape));
  }
  // A layer with a weight and a bias of the weight's first dimension.
  void Layer(const std::string& prefix, Shape weight) {
    const std::int64_t outputs = weight.front();
    Tensor(prefix + ".weight", std::move(weight));
    Tensor(prefix + ".bias", {outputs});
  }
  void Norm(const std::string& prefix, std::int64_t channels) { Layer(prefix, {channels}); }
  void Linear(const std::string& prefix, std::int64_t out, std::int64_t in) {
    Layer(prefix, {out, in});
  }
  void Conv(const std::string& prefix, std::int64_t out, std::int64_t in, std::int64_t kernel) {
    Layer(prefix, {out, in, kernel, kernel});
  }

 private:
  KeyShapes* out_;
};

// The most frequent value in `counts`; `fallback` when it is empty or ties
// for the most frequent.
std::int64_t Majority(const std::map<std::int64_t, int>& counts, std::int64_t fallback) {
  std::int64_t best = fallback;
  const auto at_fallback = counts.find(fallback);
  int best_count = at_fallback == counts.end() ? 0 : at_fallback->second;
  for (const auto& [value, count] : counts) {
    if (count > best_count) {
      best = value;
      best_count = count;
    }
  }
  return best;
}

// The most frequent `dim`-th dimension of the tensors named
// `before + i + after` for i = 0, 1, ... while they exist; `fallback` when
// there are none. A majority keeps one damaged tensor from setting a width
// that every other tensor then fails to match.
std::int64_t MostCommonDim(const Checkpoint& checkpoint, const std::string& before,
                           const std::string& after, std::size_t dim, std::int64_t fallback) {
  std::map<std::int64_t, int> counts;
  for (int i = 0;; ++i) {
    const TensorInfo* t = checkpoint.Find(before + std::to_string(i) + after);
    if (t == nullptr) break;
    if (t->shape.size() > dim) ++counts[t->shape[dim]];
  }
  return Majority(counts, fallback);
}

// ldm's ResBlock without scale-shift normalisation, as every SD family uses it.
void UNetResBlock(KeyList& keys, const std::string& p, std::int64_t in, std::int64_t out,
                  std::int64_t time_embed_dim) {
  keys.Norm(p + ".in_layers.0", in);
  keys.Conv(p + ".in_layers.2", out, in, 3);
  keys.Linear(p + ".emb_layers.1", out, time_embed_dim);
  keys.Norm(p + ".out_layers.0", out);
  keys.Conv(p + ".out_layers.3", out, out, 3);
  if (in != out) keys.Conv(p + ".skip_connection", out, in, 1);
}

// SpatialTransformer with inner width = channels (heads * head width), a
// GEGLU feed-forward of 4x width, and 1x1 conv or Linear projections.
void UNetTransformer(KeyList& keys, const std::string& p, std::int64_t depth, std::int64_t c,
                     const UNetSpec& u, std::int64_t context_dim) {
  keys.Norm(p + ".norm", c);
  const Shape projection = u.linear_projection ? Shape{c, c} : Shape{c, c, 1, 1};
  keys.Layer(p + ".proj_in", projection);
  for (std::int64_t d = 0; d < depth; ++d) {
    const std::string block = p + ".transformer_blocks." + std::to_string(d);
    for (const char* attention : {".attn1", ".attn2"}) {
      const std::int64_t source = std::string(attention) == ".attn2" ? context_dim : c;
      keys.Tensor(block + attention + ".to_q.weight", {c, c});
      keys.Tensor(block + attention + ".to_k.weight", {c, source});
      keys.Tensor(block + attention + ".to_v.weight", {c, source});
      keys.Linear(block + attention + ".to_out.0", c, c);
    }
    keys.Linear(block + ".ff.net.0.proj", c * 4 * 2, c);
    keys.Linear(block + ".ff.net.2", c, c * 4);
    for (const char* norm : {".norm1", ".norm2", ".norm3"}) keys.Norm(block + norm, c);
  }
  keys.Layer(p + ".proj_out", projection);
}

std::int64_t DepthAt(const UNetSpec& u, std::size_t level) {
  return level < u.transformer_depth.size() ? u.transformer_depth[level] : 0;
}

// The context width most cross-attention key projections take.
std::int64_t ContextDim(const Checkpoint& checkpoint, const UNetSpec& u) {
  std::map<std::int64_t, int> counts;
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (t.name.starts_with(u.prefix) && t.name.ends_with(".attn2.to_k.weight") &&
        t.shape.size() == 2) {
      ++counts[t.shape[1]];
    }
  }
  return Majority(counts, u.context_dim);
}

// ldm's openaimodel.UNetModel and sgm's copy of it: the input blocks of
// each level, a downsampler between levels, the middle block, and one more
// output block per level than input blocks, the last with an upsampler.
KeyShapes UNetKeys(const UNetSpec& u, std::int64_t context_dim) {
  KeyShapes out;
  KeyList keys(&out);
  const std::string& p = u.prefix;
  const std::int64_t mc = u.model_channels;
  const std::int64_t ted = mc * 4;  // time_embed_dim
  keys.Linear(p + "time_embed.0", ted, mc);
  keys.Linear(p + "time_embed.2", ted, ted);
  if (u.adm_in_channels > 0) {
    keys.Linear(p + "label_emb.0.0", ted, u.adm_in_channels);
    keys.Linear(p + "label_emb.0.2", ted, ted);
  }
  keys.Conv(p + "input_blocks.0.0", mc, u.in_channels, 3);
  std::vector<std::int64_t> skip_channels = {mc};
  std::int64_t channels = mc;
  int index = 1;
  const std::size_t levels = u.channel_mult.size();
  for (std::size_t level = 0; level < levels; ++level) {
    const std::int64_t level_channels = u.channel_mult[level] * mc;
    for (std::int64_t r = 0; r < u.num_res_blocks; ++r, ++index) {
      const std::string block = p + "input_blocks." + std::to_string(index);
      UNetResBlock(keys, block + ".0", channels, level_channels, ted);
      channels = level_channels;
      if (DepthAt(u, level) > 0) {
        UNetTransformer(keys, block + ".1", DepthAt(u, level), channels, u, context_dim);
      }
      skip_channels.push_back(channels);
    }
    if (level + 1 != levels) {
      keys.Conv(p + "input_blocks." + std::to_string(index++) + ".0.op", channels, channels, 3);
      skip_channels.push_back(channels);
    }
  }
  UNetResBlock(keys, p + "middle_block.0", channels, channels, ted);
  UNetTransformer(keys, p + "middle_block.1", u.middle_transformer_depth, channels, u,
                  context_dim);
  UNetResBlock(keys, p + "middle_block.2", channels, channels, ted);
  index = 0;
  for (std::size_t level = levels; level-- > 0;) {
    const std::int64_t level_channels = u.channel_mult[level] * mc;
    for (std::int64_t r = 0; r <= u.num_res_blocks; ++r, ++index) {
      const std::string block = p + "output_blocks." + std::to_string(index);
      const std::int64_t skip = skip_channels.back();
      skip_channels.pop_back();
      UNetResBlock(keys, block + ".0", channels + skip, level_channels, ted);
      channels = level_channels;
      int next = 1;
      if (DepthAt(u, level) > 0) {
        UNetTransformer(keys, block + "." + std::to_string(next++), DepthAt(u, level), channels, u,
                        context_dim);
      }
      if (level > 0 && r == u.num_res_blocks) {
        keys.Conv(block + "." + std::to_string(next) + ".conv", channels, channels, 3);
      }
    }
  }
  keys.Norm(p + "out.0", mc);
  keys.Conv(p + "out.2", u.out_channels, mc, 3);
  return out;
}

// ldm's ResnetBlock: a 1x1 nin_shortcut only where the widths differ.
void VaeResBlock(KeyList& keys, const std::string& p, std::int64_t in, std::int64_t out) {
  keys.Norm(p + ".norm1", in);
  keys.Conv(p + ".conv1", out, in, 3);
  keys.Norm(p + ".norm2", out);
  keys.Conv(p + ".conv2", out, out, 3);
  if (in != out) keys.Conv(p + ".nin_shortcut", out, in, 1);
}

void VaeMiddle(KeyList& keys, const std::string& p, std::int64_t c) {
  VaeResBlock(keys, p + ".mid.block_1", c, c);
  keys.Norm(p + ".mid.attn_1.norm", c);
  for (const char* layer : {".q", ".k", ".v", ".proj_out"}) {
    keys.Conv(p + ".mid.attn_1" + layer, c, c, 1);
  }
  VaeResBlock(keys, p + ".mid.block_2", c, c);
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

// The output width of each level (ch * ch_mult[level]), the majority of
// its encoder and decoder convolutions.
std::vector<std::int64_t> VaeLevelWidths(const Checkpoint& checkpoint, const VaeSpec& vae) {
  std::vector<std::int64_t> widths;
  for (std::int64_t level = 0; level < vae.levels; ++level) {
    std::map<std::int64_t, int> counts;
    for (const char* side : {"encoder.down.", "decoder.up."}) {
      const std::string prefix = vae.prefix + side + std::to_string(level) + ".block.";
      for (const char* conv : {".conv1.weight", ".conv2.weight", ".norm2.weight"}) {
        for (int i = 0;; ++i) {
          const TensorInfo* t = checkpoint.Find(prefix + std::to_string(i) + conv);
          if (t == nullptr) break;
          if (!t->shape.empty()) ++counts[t->shape[0]];
        }
      }
    }
    widths.push_back(Majority(counts, vae.base_channels));
  }
  return widths;
}

KeyShapes VaeKeys(const Checkpoint& checkpoint, const VaeSpec& vae) {
  KeyShapes out;
  KeyList keys(&out);
  const std::string& p = vae.prefix;
  const std::int64_t levels = vae.levels;
  const std::vector<std::int64_t> widths = VaeLevelWidths(checkpoint, vae);
  // NOTE: z_channels is taken to equal embed_dim, as in every SD-family
  // AutoencoderKL config.
  const std::int64_t z = vae.latent_channels;
  // The decoder has one block more per level than the encoder.
  const std::int64_t blocks = std::max(CountVaeBlocks(checkpoint, p + "encoder.down.", levels),
                                       CountVaeBlocks(checkpoint, p + "decoder.up.", levels) - 1);
  keys.Conv(p + "encoder.conv_in", vae.base_channels, vae.image_channels, 3);
  std::int64_t channels = vae.base_channels;
  for (std::int64_t i = 0; i < levels; ++i) {
    const std::string level = p + "encoder.down." + std::to_string(i);
    for (std::int64_t j = 0; j < blocks; ++j) {
      VaeResBlock(keys, level + ".block." + std::to_string(j), channels, widths[i]);
      channels = widths[i];
    }
    if (i + 1 != levels) keys.Conv(level + ".downsample.conv", channels, channels, 3);
  }
  VaeMiddle(keys, p + "encoder", channels);
  keys.Norm(p + "encoder.norm_out", channels);
  keys.Conv(p + "encoder.conv_out", 2 * z, channels, 3);
  keys.Conv(p + "quant_conv", 2 * vae.latent_channels, 2 * z, 1);
  keys.Conv(p + "post_quant_conv", z, vae.latent_channels, 1);
  keys.Conv(p + "decoder.conv_in", channels, z, 3);
  VaeMiddle(keys, p + "decoder", channels);
  for (std::int64_t i = levels; i-- > 0;) {
    const std::string level = p + "decoder.up." + std::to_string(i);
    for (std::int64_t j = 0; j <= blocks; ++j) {
      VaeResBlock(keys, level + ".block." + std::to_string(j), channels, widths[i]);
      channels = widths[i];
    }
    if (i != 0) keys.Conv(level + ".upsample.conv", channels, channels, 3);
  }
  keys.Norm(p + "decoder.norm_out", channels);
  keys.Conv(p + "decoder.conv_out", vae.image_channels, channels, 3);
  return out;
}

// The text width is the majority of the layers' first LayerNorm, and the
// MLP width the majority of their first MLP projection, which may differ
// from 4x width in unusual encoders.
KeyShapes ClipKeys(const Checkpoint& checkpoint, const ClipTextSpec& text) {
  KeyShapes out;
  KeyList keys(&out);
  const std::string& p = text.prefix;
  const std::string layers_prefix = p + "encoder.layers.";
  const std::int64_t w = MostCommonDim(checkpoint, layers_prefix, ".layer_norm1.weight", 0,
                                       text.width);
  const std::int64_t mlp = MostCommonDim(checkpoint, layers_prefix, ".mlp.fc1.weight", 0, 4 * w);
  keys.Tensor(p + "embeddings.token_embedding.weight", {text.vocab_size, w});
  keys.Tensor(p + "embeddings.position_embedding.weight", {text.context_length, w});
  // CLIP ViT-L, the text encoder of SD 1.x and SDXL, has 12 layers; a file
  // with fewer has lost some.
  const std::int64_t layers = text.width == 768 ? std::max<std::int64_t>(text.layers, 12)
                                                : text.layers;
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string layer = layers_prefix + std::to_string(i);
    for (const char* name : {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj",
                             ".self_attn.out_proj"}) {
      keys.Linear(layer + name, w, w);
    }
    keys.Norm(layer + ".layer_norm1", w);
    keys.Linear(layer + ".mlp.fc1", mlp, w);
    keys.Linear(layer + ".mlp.fc2", w, mlp);
    keys.Norm(layer + ".layer_norm2", w);
  }
  keys.Norm(p + "final_layer_norm", w);
  return out;
}

// `layers` is the count to expect, which the caller chooses from the
// architecture and the family.
KeyShapes OpenClipKeys(const Checkpoint& checkpoint, const OpenClipTextSpec& text,
                       std::int64_t layers, std::optional<std::int64_t> projection_dim) {
  KeyShapes out;
  KeyList keys(&out);
  const std::string& p = text.prefix;
  const std::string blocks_prefix = p + "transformer.resblocks.";
  const std::int64_t w = MostCommonDim(checkpoint, blocks_prefix, ".ln_1.weight", 0, text.width);
  const std::int64_t mlp = MostCommonDim(checkpoint, blocks_prefix, ".mlp.c_fc.weight", 0, 4 * w);
  keys.Tensor(p + "token_embedding.weight", {text.vocab_size, w});
  keys.Tensor(p + "positional_embedding", {text.context_length, w});
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string block = blocks_prefix + std::to_string(i);
    keys.Tensor(block + ".attn.in_proj_weight", {3 * w, w});
    keys.Tensor(block + ".attn.in_proj_bias", {3 * w});
    keys.Linear(block + ".attn.out_proj", w, w);
    keys.Norm(block + ".ln_1", w);
    keys.Norm(block + ".ln_2", w);
    keys.Linear(block + ".mlp.c_fc", mlp, w);
    keys.Linear(block + ".mlp.c_proj", w, mlp);
  }
  keys.Norm(p + "ln_final", w);
  if (projection_dim) keys.Tensor(p + "text_projection", {w, *projection_dim});
  return out;
}

// The OpenCLIP layers a loader fills. SD 2.x never runs the last layer of
// ViT-H, so a file without it loads; SDXL's pooled output runs all of bigG.
std::int64_t OpenClipLayersToExpect(const OpenClipTextSpec& text, Family family) {
  if (text.full_layers == 0) return text.layers;
  if (family == Family::kSD2 && text.layers + 1 == text.full_layers) return text.layers;
  return std::max(text.layers, text.full_layers);
}

ExpectedComponent Component(const std::string& name, const std::string& title,
                            const std::string& prefix, bool present) {
  ExpectedComponent component;
  component.name = name;
  component.title = title;
  component.prefix = prefix;
  component.present = present;
  return component;
}

void SetKeys(ExpectedComponent* component, KeyShapes keys) {
  component->required = std::move(keys.keys);
  component->shapes = std::move(keys.shapes);
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

ExpectedComponent ExpectedVae(const Checkpoint& checkpoint, const VaeSpec& vae) {
  ExpectedComponent component = Component("vae", "VAE", vae.prefix, true);
  SetKeys(&component, VaeKeys(checkpoint, vae));
  return component;
}

std::vector<ExpectedComponent> ExpectedComponents(const Checkpoint& checkpoint,
                                                  const ModelSpec& spec) {
  std::vector<ExpectedComponent> components;
  ExpectedComponent unet = Component("unet", "UNet", spec.unet.prefix, true);
  SetKeys(&unet, UNetKeys(spec.unet, ContextDim(checkpoint, spec.unet)));
  components.push_back(std::move(unet));

  ExpectedComponent vae = Component("vae", "VAE", kVaePrefix, spec.vae.has_value());
  if (spec.vae) SetKeys(&vae, VaeKeys(checkpoint, *spec.vae));
  components.push_back(std::move(vae));

  // NOTE: SDXL's pooled text embedding is expected to keep the OpenCLIP
  // width, as ViT-bigG's projection (1280 to 1280) does.
  const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
  for (const TextEncoderSlot& slot : TextEncoderSlots(spec.family)) {
    ExpectedComponent text = Component(slot.name, slot.title, slot.prefix, false);
    if (spec.text && spec.text->prefix.starts_with(slot.prefix)) {
      text.present = true;
      SetKeys(&text, ClipKeys(checkpoint, *spec.text));
    } else if (spec.open_clip && spec.open_clip->prefix.starts_with(slot.prefix)) {
      text.present = true;
      const OpenClipTextSpec& open_clip = *spec.open_clip;
      SetKeys(&text, OpenClipKeys(checkpoint, open_clip,
                                  OpenClipLayersToExpect(open_clip, spec.family),
                                  sdxl ? std::optional<std::int64_t>(open_clip.width)
                                       : std::nullopt));
    } else if (spec.text && slot.name == "text_encoder" && spec.family != Family::kSD2) {
      text.present = true;
      text.stored_prefix = spec.text->prefix;
      SetKeys(&text, ClipKeys(checkpoint, *spec.text));
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
