#include "model/model_spec.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <map>

namespace sdonnx {
namespace {

// Where single-file checkpoints keep CLIP ViT-L in the Hugging Face layout,
// tried in this order. Besides the original names, files saved by some tools
// use ComfyUI's internal names (clip_l.) or diffusers' (text_encoder.).
struct ClipLayout {
  const char* prefix;
  const char* note;  // The note printed when this layout is found, or nullptr.
};
constexpr ClipLayout kSd1ClipLayouts[] = {
    {"cond_stage_model.transformer.text_model.", nullptr},
    {"cond_stage_model.transformer.", "text encoder in the old layout without .text_model"},
    {"cond_stage_model.clip_l.transformer.text_model.",
     "text encoder under ComfyUI's cond_stage_model.clip_l. names"},
    {"clip_l.transformer.text_model.", "text encoder under ComfyUI's clip_l. names"},
    {"text_encoder.text_model.", "text encoder under diffusers' text_encoder. names"},
};
constexpr ClipLayout kSdxlClipLayouts[] = {
    {"conditioner.embedders.0.transformer.text_model.", nullptr},
    {"cond_stage_model.clip_l.transformer.text_model.",
     "first text encoder under ComfyUI's cond_stage_model.clip_l. names"},
    {"clip_l.transformer.text_model.", "first text encoder under ComfyUI's clip_l. names"},
    {"text_encoder.text_model.", "first text encoder under diffusers' text_encoder. names"},
};
// Prefixes of OpenCLIP bigG saved in the Hugging Face layout (separate
// q/k/v, a Linear text projection).
// NOTE: this layout is not converted yet. Such files get a note and no clip_text_2.
constexpr const char* kHfBigGPrefixes[] = {
    "conditioner.embedders.1.transformer.text_model.",
    "cond_stage_model.clip_g.transformer.text_model.",
    "clip_g.transformer.text_model.",
    "text_encoder_2.text_model.",
};

// Whether the file has a weight under `prefix`: any key but the buffers
// that files keep even after the weights were stripped (position_ids,
// logit_scale). A component is found by any of its weights, not by one
// chosen key, so that a component missing that key is reported as
// incomplete instead of being taken for absent.
bool HasWeightsUnder(const Checkpoint& checkpoint, const std::string& prefix) {
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (t.name.starts_with(prefix) && !t.name.ends_with("position_ids") &&
        !t.name.ends_with("logit_scale")) {
      return true;
    }
  }
  return false;
}

// The first layout with a weight under its prefix.
template <std::size_t N>
const ClipLayout* FindClipLayout(const Checkpoint& checkpoint, const ClipLayout (&layouts)[N]) {
  for (const ClipLayout& layout : layouts) {
    if (HasWeightsUnder(checkpoint, layout.prefix)) return &layout;
  }
  return nullptr;
}

// Values the YAML config can supply; unset ones keep the family defaults.
struct ConfigValues {
  std::optional<std::int64_t> num_heads;
  std::optional<std::int64_t> num_head_channels;
  std::optional<std::string> parameterization;
  std::optional<float> scale_factor;
  // sgm (SDXL) configs: the denoiser's scaling class, EpsScaling or VScaling.
  std::optional<std::string> denoiser_scaling;
  struct Text {
    std::optional<std::int64_t> heads;
    std::optional<std::string> activation;
    std::optional<float> layer_norm_eps;
    std::optional<std::int64_t> layers;
  };
  // By the text encoder's checkpoint prefix, such as "cond_stage_model".
  std::map<std::string, Text> texts;
};

template <typename T>
void ReadIf(const YAML::Node& node, const char* key, std::optional<T>* out) {
  if (node && node.IsMap() && node[key]) *out = node[key].as<T>();
}

// node[key] for a map that has the key, else a null node (which is not a
// map). yaml-cpp throws when a missing key's value is indexed again, so
// lookups go through this.
YAML::Node Child(const YAML::Node& node, const char* key) {
  if (node && node.IsMap() && node[key]) return node[key];
  return YAML::Node();
}

Result<ConfigValues> ReadConfig(const std::string& path) {
  ConfigValues values;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::Error(path + ": cannot read the YAML config: it is missing or not a file; "
                         "pass a .yaml file");
  }
  try {
    const YAML::Node root = YAML::LoadFile(path);
    const YAML::Node params = Child(Child(root, "model"), "params");
    if (!params || !params.IsMap()) {
      return Status::Error(path + ": not an original-format model config (no model.params "
                           "section)");
    }
    ReadIf(params, "parameterization", &values.parameterization);
    ReadIf(params, "scale_factor", &values.scale_factor);
    // ldm configs name the UNet unet_config, sgm configs network_config.
    const YAML::Node ldm_unet = Child(Child(params, "unet_config"), "params");
    const YAML::Node unet =
        ldm_unet.IsMap() ? ldm_unet : Child(Child(params, "network_config"), "params");
    ReadIf(unet, "num_heads", &values.num_heads);
    ReadIf(unet, "num_head_channels", &values.num_head_channels);
    const YAML::Node scaling =
        Child(Child(Child(params, "denoiser_config"), "params"), "scaling_config");
    ReadIf(scaling, "target", &values.denoiser_scaling);
    // Not part of the original format: the sdonnx test fixtures describe
    // their tiny text encoders here, since the originals take the
    // architecture from a pretrained model name.
    const YAML::Node texts = Child(root, "tiny_text_encoders");
    if (texts && texts.IsMap()) {
      for (const auto& entry : texts) {
        ConfigValues::Text& text = values.texts[entry.first.as<std::string>()];
        ReadIf(entry.second, "heads", &text.heads);
        ReadIf(entry.second, "activation", &text.activation);
        ReadIf(entry.second, "layer_norm_eps", &text.layer_norm_eps);
        ReadIf(entry.second, "layers", &text.layers);
      }
    }
  } catch (const YAML::Exception& e) {
    return Status::Error(path + ": cannot read the YAML config: " + e.what());
  } catch (const std::exception& e) {  // yaml-cpp's file reading, e.g. for a folder
    return Status::Error(path + ": cannot read the YAML config: " + e.what() +
                         "; pass a .yaml file");
  }
  return values;
}

Status ApplyConfig(const ConfigValues& config, ModelSpec* spec) {
  if (config.num_heads) spec->unet.num_heads = *config.num_heads;
  if (config.num_head_channels) spec->unet.num_head_channels = *config.num_head_channels;
  if (config.scale_factor) spec->vae_scaling_factor = *config.scale_factor;
  if (config.denoiser_scaling) {
    const bool v = config.denoiser_scaling->ends_with("VScaling");
    spec->prediction_type = v ? "v_prediction" : "epsilon";
    spec->prediction_basis = "config denoiser scaling: " + *config.denoiser_scaling;
  } else if (config.parameterization) {
    if (*config.parameterization == "v") {
      spec->prediction_type = "v_prediction";
    } else if (*config.parameterization == "eps") {
      spec->prediction_type = "epsilon";
    } else {
      return Status::Error(*spec->config_path + ": unknown parameterization '" +
                           *config.parameterization + "' (expected eps or v)");
    }
    spec->prediction_basis = "config parameterization: " + *config.parameterization;
  } else if (!spec->prediction_basis.starts_with("marker key")) {
    // A config that does not state the prediction type yields to marker keys.
    spec->prediction_type = "epsilon";
    spec->prediction_basis = "config without parameterization (ldm's default, eps)";
  }
  for (const auto& [prefix, text] : config.texts) {
    // Matched by the encoder's original prefix, whatever names the file uses.
    const bool sdxl = spec->family == Family::kSDXL || spec->family == Family::kSDXLRefiner;
    const std::string clip_prefix = sdxl ? kSdxlClipLayouts[0].prefix : kSd1ClipLayouts[0].prefix;
    if (spec->text && clip_prefix.starts_with(prefix + ".")) {
      if (text.heads) spec->text->heads = *text.heads;
      if (text.activation) spec->text->quick_gelu = *text.activation == "quick_gelu";
      if (text.layer_norm_eps) spec->text->layer_norm_eps = *text.layer_norm_eps;
    }
    if (spec->open_clip && spec->open_clip->prefix.starts_with(prefix + ".")) {
      if (text.heads) spec->open_clip->heads = *text.heads;
      if (text.layer_norm_eps) spec->open_clip->layer_norm_eps = *text.layer_norm_eps;
      if (text.layers) spec->open_clip->full_layers = *text.layers;
    }
  }
  return Status::Ok();
}

Status DetectFamily(const Checkpoint& checkpoint, ModelSpec* spec) {
  const bool sgm_text = checkpoint.HasPrefix("conditioner.embedders.");
  if (sgm_text || spec->unet.adm_in_channels > 0) {
    // The refiner has one text encoder, OpenCLIP bigG as embedder 0, and 5
    // time ids: original size, crop, and an aesthetic score in place of the
    // target size.
    const bool refiner = checkpoint.HasPrefix("conditioner.embedders.0.model.") ||
                         (!sgm_text && spec->unet.num_time_ids == 5);
    spec->family = refiner ? Family::kSDXLRefiner : Family::kSDXL;
    spec->family_basis = sgm_text ? (refiner ? "conditioner.embedders.0 is OpenCLIP (refiner)"
                                             : "conditioner.embedders.* with CLIP ViT-L first")
                                  : "UNet with label_emb (vector conditioning)";
    spec->unet.num_heads = -1;
    spec->unet.num_head_channels = 64;
    spec->vae_scaling_factor = 0.13025f;
    spec->prediction_basis = "SDXL default";
    return Status::Ok();
  }
  // SD 2.x is recognised by its OpenCLIP text encoder or, in files without a
  // text encoder, by the 1024-wide cross-attention context of OpenCLIP ViT-H.
  const UNetSpec& unet = spec->unet;
  const bool open_clip = HasWeightsUnder(checkpoint, kSd2TextPrefix);
  const ClipLayout* clip = FindClipLayout(checkpoint, kSd1ClipLayouts);
  const bool hf_clip = clip != nullptr;
  if (open_clip || (!hf_clip && unet.context_dim == 1024)) {
    spec->family = Family::kSD2;
    spec->family_basis = open_clip ? "OpenCLIP text encoder (cond_stage_model.model.*)"
                                   : "1024-wide cross-attention context";
    spec->unet.num_heads = -1;
    spec->unet.num_head_channels = 64;
    return Status::Ok();
  }
  spec->family = Family::kSD1;
  spec->family_basis = hf_clip ? "CLIP ViT-L text encoder (" + std::string(clip->prefix) + "*)"
                               : "UNet without SD 2.x or SDXL markers";
  return Status::Ok();
}

std::string JoinInts(const std::vector<std::int64_t>& values) {
  std::string s = "[";
  for (std::size_t i = 0; i < values.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(values[i]);
  }
  return s + "]";
}

Result<ClipTextSpec> ReadClip(const Checkpoint& checkpoint, const std::string& prefix) {
  ClipTextSpec text;
  text.prefix = prefix;
  SDONNX_RETURN_IF_ERROR(ReadClipTextShapes(checkpoint, &text));
  return text;
}

Result<OpenClipTextSpec> ReadOpenClip(const Checkpoint& checkpoint, const std::string& prefix) {
  OpenClipTextSpec text;
  text.prefix = prefix;
  SDONNX_RETURN_IF_ERROR(ReadOpenClipTextShapes(checkpoint, &text));
  return text;
}

// Finds the family's text encoders and sets what the UNet takes from each.
Status ReadTextEncoders(const Checkpoint& checkpoint, ModelSpec* spec) {
  const bool sdxl = spec->family == Family::kSDXL || spec->family == Family::kSDXLRefiner;
  if (!sdxl) {
    if (const ClipLayout* clip = FindClipLayout(checkpoint, kSd1ClipLayouts)) {
      SDONNX_ASSIGN_OR_RETURN(spec->text, ReadClip(checkpoint, clip->prefix));
      if (clip->note) spec->notes.push_back(clip->note);
    } else if (HasWeightsUnder(checkpoint, kSd2TextPrefix)) {
      SDONNX_ASSIGN_OR_RETURN(spec->open_clip, ReadOpenClip(checkpoint, kSd2TextPrefix));
    } else {
      spec->notes.push_back("no text encoder in the checkpoint (no " +
                            std::string(kSd1TextPrefix) + "* or " + kSd2TextPrefix + "* keys)");
    }
    if (spec->family == Family::kSD2) spec->text_pad_id = 0;
    return Status::Ok();
  }
  // SDXL takes the penultimate layer of each encoder, without a final norm.
  const std::string big_g = spec->family == Family::kSDXL ? "conditioner.embedders.1.model."
                                                          : "conditioner.embedders.0.model.";
  const ClipLayout* clip = nullptr;
  if (spec->family == Family::kSDXL) clip = FindClipLayout(checkpoint, kSdxlClipLayouts);
  if (clip) {
    SDONNX_ASSIGN_OR_RETURN(spec->text, ReadClip(checkpoint, clip->prefix));
    spec->text_context_output = "hidden_states." + std::to_string(spec->text->layers - 1);
    if (clip->note) spec->notes.push_back(clip->note);
  }
  for (const char* prefix : kHfBigGPrefixes) {
    if (checkpoint.HasPrefix(prefix)) {
      spec->notes.push_back(std::string("OpenCLIP bigG text encoder under ") + prefix +
                            "* in the Hugging Face layout: not supported yet, so no clip_text_2 "
                            "is written; convert a file with conditioner.embedders.1.model.* keys");
    }
  }
  if (HasWeightsUnder(checkpoint, big_g)) {
    SDONNX_ASSIGN_OR_RETURN(spec->open_clip, ReadOpenClip(checkpoint, big_g));
    spec->open_clip_component = "clip_text_2";
    spec->text_2_pad_id = 0;
    if (spec->open_clip->has_projection) {
      spec->unet.text_embed_dim = checkpoint.Find(big_g + "text_projection")->shape[1];
      spec->unet.num_time_ids =
          (spec->unet.adm_in_channels - spec->unet.text_embed_dim) / spec->unet.time_id_dim;
    }
  }
  if (!spec->text && !spec->open_clip) {
    spec->notes.push_back("no text encoder in the checkpoint (no conditioner.embedders.* keys)");
  }
  return Status::Ok();
}

// Sets which OpenCLIP output is the UNet's context. SD 2.x and SDXL use the
// penultimate layer of the full architecture; when a file leaves out the
// unused last layer, that is the last layer the file has.
void SetOpenClipContext(ModelSpec* spec) {
  if (!spec->open_clip) return;
  OpenClipTextSpec& text = *spec->open_clip;
  if (text.full_layers == 0 && text.width == 1024) text.full_layers = 24;  // ViT-H
  if (text.full_layers == 0 && text.width == 1280) text.full_layers = 32;  // ViT-bigG
  const bool pruned = text.full_layers == text.layers + 1;
  if (pruned) spec->notes.push_back("text encoder: the unused last layer is absent");
  if (spec->family == Family::kSD2) {
    // ln_final of the penultimate layer.
    spec->text_context_output = pruned ? "last_hidden_state" : "clip_skip_2";
  } else {
    spec->text_2_context_output =
        "hidden_states." + std::to_string(pruned ? text.layers : text.layers - 1);
  }
}

}  // namespace

std::string FamilyName(Family family) {
  switch (family) {
    case Family::kSD1: return "sd1";
    case Family::kSD2: return "sd2";
    case Family::kSDXL: return "sdxl";
    case Family::kSDXLRefiner: return "sdxl-refiner";
  }
  return "unknown";
}

std::optional<std::string> FindConfig(const std::string& checkpoint_path,
                                      const std::optional<std::string>& explicit_config) {
  if (explicit_config) return explicit_config;
  std::filesystem::path beside(checkpoint_path);
  beside.replace_extension(".yaml");
  std::error_code ec;
  if (std::filesystem::is_regular_file(beside, ec)) return beside.string();
  return std::nullopt;
}

std::string VaeNote(const VaeSpec& vae) {
  return "vae: ch " + std::to_string(vae.base_channels) + ", levels " + std::to_string(vae.levels) +
         ", downsampling factor " + std::to_string(vae.downsample_factor) + ", latent channels " +
         std::to_string(vae.latent_channels);
}

Status CheckUNetHeads(const ModelSpec& spec) {
  const UNetSpec& u = spec.unet;
  std::vector<std::int64_t> widths;
  for (std::size_t level = 0; level < u.channel_mult.size(); ++level) {
    if (level < u.transformer_depth.size() && u.transformer_depth[level] > 0) {
      widths.push_back(u.channel_mult[level] * u.model_channels);
    }
  }
  if (u.middle_transformer_depth > 0 && !u.channel_mult.empty()) {
    widths.push_back(u.channel_mult.back() * u.model_channels);
  }
  for (const std::int64_t width : widths) {
    const std::int64_t heads =
        u.num_head_channels > 0 ? width / u.num_head_channels : u.num_heads;
    if (heads > 0 && width % heads == 0) continue;
    const std::string rule = u.num_head_channels > 0
                                 ? "heads of " + std::to_string(u.num_head_channels) +
                                       " channels (num_head_channels)"
                                 : std::to_string(u.num_heads) + " heads (num_heads)";
    std::string message = "UNet: a transformer of " + std::to_string(width) +
                          " channels cannot be split into " + rule + "; ";
    if (spec.config_path) {
      message += "check num_heads / num_head_channels in " + *spec.config_path;
    } else {
      message += "no config was given (--config) or found beside the checkpoint (a .yaml "
                 "with its stem), so the " + FamilyName(spec.family) +
                 " default is used, and the weights do not show the head count: pass "
                 "--config FILE.yaml with the UNet's num_heads or num_head_channels";
    }
    return Status::Error(message);
  }
  return Status::Ok();
}

Result<ModelSpec> DetectModel(const Checkpoint& checkpoint,
                              const std::optional<std::string>& explicit_config,
                              const std::optional<std::string>& prediction_type) {
  ModelSpec spec;
  SDONNX_RETURN_IF_ERROR(ReadUNetShapes(checkpoint, &spec.unet));
  SDONNX_RETURN_IF_ERROR(DetectFamily(checkpoint, &spec));
  if (spec.unet.in_channels == 9) spec.variant = "inpaint";
  if (spec.unet.in_channels == 8) spec.variant = "instruct-pix2pix";

  if (checkpoint.HasPrefix(kVaePrefix)) {
    VaeSpec vae;
    SDONNX_RETURN_IF_ERROR(ReadVaeShapes(checkpoint, &vae));
    spec.vae = vae;
  } else {
    spec.notes.push_back("no VAE in the checkpoint (no first_stage_model.* keys)");
  }
  SDONNX_RETURN_IF_ERROR(ReadTextEncoders(checkpoint, &spec));
  if (spec.family == Family::kSD1) spec.prediction_basis = "SD 1.x default";
  if (spec.family == Family::kSD2) {
    spec.prediction_basis = "SD 2.x without a config: decided by a UNet probe";
  }
  if (checkpoint.Has("v_pred") || checkpoint.Has("edm_vpred.sigma_max")) {
    spec.prediction_type = "v_prediction";
    spec.prediction_basis = checkpoint.Has("v_pred") ? "marker key v_pred"
                                                     : "marker key edm_vpred.sigma_max";
  }
  spec.config_path = FindConfig(checkpoint.path(), explicit_config);
  if (spec.config_path) {
    SDONNX_ASSIGN_OR_RETURN(ConfigValues config, ReadConfig(*spec.config_path));
    SDONNX_RETURN_IF_ERROR(ApplyConfig(config, &spec));
    spec.notes.push_back("config: " + *spec.config_path);
  }
  SetOpenClipContext(&spec);
  if (prediction_type) {
    if (*prediction_type == "probe") {
      spec.prediction_basis = "SD 2.x without a config: decided by a UNet probe";
      if (spec.family != Family::kSD2) {
        return Status::Error("--prediction-type probe is for SD 2.x checkpoints; this one is " +
                             FamilyName(spec.family));
      }
    } else if (*prediction_type == "epsilon" || *prediction_type == "eps") {
      spec.prediction_type = "epsilon";
    } else if (*prediction_type == "v_prediction" || *prediction_type == "v") {
      spec.prediction_type = "v_prediction";
    } else {
      return Status::Error("--prediction-type '" + *prediction_type +
                           "' is invalid; use epsilon, v_prediction or probe");
    }
    if (*prediction_type != "probe") spec.prediction_basis = "--prediction-type";
  }

  const UNetSpec& u = spec.unet;
  spec.notes.push_back("unet: in_channels " + std::to_string(u.in_channels) +
                       ", model_channels " + std::to_string(u.model_channels) +
                       ", channel_mult " + JoinInts(u.channel_mult) + ", num_res_blocks " +
                       std::to_string(u.num_res_blocks) + ", transformer_depth " +
                       JoinInts(u.transformer_depth) + ", context_dim " +
                       std::to_string(u.context_dim));
  if (spec.vae) {
    spec.notes.push_back(VaeNote(*spec.vae));
  }
  // Named by the file each encoder becomes: SDXL writes OpenCLIP as the
  // second encoder, SD 2.x as its only one.
  if (spec.text) {
    spec.notes.push_back("clip_text: CLIP text encoder, width " + std::to_string(spec.text->width) +
                         ", layers " + std::to_string(spec.text->layers) + ", vocab " +
                         std::to_string(spec.text->vocab_size));
  }
  if (spec.open_clip) {
    const bool sdxl = spec.family == Family::kSDXL || spec.family == Family::kSDXLRefiner;
    spec.notes.push_back(std::string(sdxl ? "clip_text_2" : "clip_text") +
                         ": OpenCLIP text encoder, width " +
                         std::to_string(spec.open_clip->width) + ", layers " +
                         std::to_string(spec.open_clip->layers) + ", vocab " +
                         std::to_string(spec.open_clip->vocab_size));
  }
  return spec;
}

}  // namespace sdonnx
