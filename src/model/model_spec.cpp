#include "model/model_spec.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

namespace sdonnx {
namespace {

// Values the YAML config can supply; unset ones keep the family defaults.
struct ConfigValues {
  std::optional<std::int64_t> num_heads;
  std::optional<std::int64_t> num_head_channels;
  std::optional<std::string> parameterization;
  std::optional<float> scale_factor;
  std::optional<std::int64_t> text_heads;
  std::optional<std::string> text_activation;
  std::optional<float> text_layer_norm_eps;
};

template <typename T>
void ReadIf(const YAML::Node& node, const char* key, std::optional<T>* out) {
  if (node && node.IsMap() && node[key]) *out = node[key].as<T>();
}

Result<ConfigValues> ReadConfig(const std::string& path) {
  ConfigValues values;
  try {
    const YAML::Node root = YAML::LoadFile(path);
    const YAML::Node params = root["model"]["params"];
    if (!params || !params.IsMap()) {
      return Status::Error(path + ": not an original-format model config (no model.params "
                           "section)");
    }
    ReadIf(params, "parameterization", &values.parameterization);
    ReadIf(params, "scale_factor", &values.scale_factor);
    const YAML::Node unet = params["unet_config"]["params"];
    ReadIf(unet, "num_heads", &values.num_heads);
    ReadIf(unet, "num_head_channels", &values.num_head_channels);
    // Not part of the original format: the sdonnx test fixtures describe
    // their tiny text encoders here, since the originals take the
    // architecture from a pretrained model name.
    const YAML::Node text = root["tiny_text_encoders"]["cond_stage_model"];
    ReadIf(text, "heads", &values.text_heads);
    ReadIf(text, "activation", &values.text_activation);
    ReadIf(text, "layer_norm_eps", &values.text_layer_norm_eps);
  } catch (const YAML::Exception& e) {
    return Status::Error(path + ": cannot read the YAML config: " + e.what());
  }
  return values;
}

Status ApplyConfig(const ConfigValues& config, ModelSpec* spec) {
  if (config.num_heads) spec->unet.num_heads = *config.num_heads;
  if (config.num_head_channels) spec->unet.num_head_channels = *config.num_head_channels;
  if (config.scale_factor) spec->vae_scaling_factor = *config.scale_factor;
  if (config.parameterization) {
    if (*config.parameterization == "v") {
      spec->prediction_type = "v_prediction";
    } else if (*config.parameterization == "eps") {
      spec->prediction_type = "epsilon";
    } else {
      return Status::Error(*spec->config_path + ": unknown parameterization '" +
                           *config.parameterization + "' (expected eps or v)");
    }
    spec->prediction_basis = "config parameterization: " + *config.parameterization;
  } else {
    spec->prediction_type = "epsilon";
    spec->prediction_basis = "config without parameterization (ldm's default, eps)";
  }
  if (spec->text) {
    if (config.text_heads) spec->text->heads = *config.text_heads;
    if (config.text_activation) spec->text->quick_gelu = *config.text_activation == "quick_gelu";
    if (config.text_layer_norm_eps) spec->text->layer_norm_eps = *config.text_layer_norm_eps;
  }
  if (spec->open_clip) {
    if (config.text_heads) spec->open_clip->heads = *config.text_heads;
    if (config.text_layer_norm_eps) spec->open_clip->layer_norm_eps = *config.text_layer_norm_eps;
  }
  return Status::Ok();
}

Status DetectFamily(const Checkpoint& checkpoint, ModelSpec* spec) {
  if (checkpoint.HasPrefix("conditioner.embedders.")) {
    return Status::Error(checkpoint.path() +
                         ": looks like an SDXL checkpoint (it has conditioner.embedders.*); "
                         "this version of sdonnx converts SD 1.x checkpoints only");
  }
  // SD 2.x is recognised by its OpenCLIP text encoder or, in files without a
  // text encoder, by the 1024-wide cross-attention context of OpenCLIP ViT-H.
  const UNetSpec& unet = spec->unet;
  const bool open_clip = checkpoint.HasPrefix(kSd2TextPrefix);
  const bool hf_clip = checkpoint.HasPrefix("cond_stage_model.transformer.");
  if (open_clip || (!hf_clip && unet.context_dim == 1024)) {
    spec->family = Family::kSD2;
    spec->family_basis = open_clip ? "OpenCLIP text encoder (cond_stage_model.model.*)"
                                   : "1024-wide cross-attention context";
    spec->unet.num_heads = -1;
    spec->unet.num_head_channels = 64;
    spec->text_context_output = "clip_skip_2";  // ln_final of the penultimate layer
    spec->text_pad_id = 0;
    return Status::Ok();
  }
  spec->family = Family::kSD1;
  spec->family_basis = hf_clip ? "CLIP ViT-L text encoder (cond_stage_model.transformer.*)"
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
  if (checkpoint.HasPrefix(kSd1TextPrefix)) {
    ClipTextSpec text;
    SDONNX_RETURN_IF_ERROR(ReadClipTextShapes(checkpoint, &text));
    spec.text = text;
  } else if (checkpoint.HasPrefix(kSd2TextPrefix)) {
    OpenClipTextSpec text;
    SDONNX_RETURN_IF_ERROR(ReadOpenClipTextShapes(checkpoint, &text));
    spec.open_clip = text;
  } else {
    spec.notes.push_back("no text encoder in the checkpoint (no " + std::string(kSd1TextPrefix) +
                         "* or " + kSd2TextPrefix + "* keys)");
  }

  spec.prediction_basis = spec.family == Family::kSD1
                              ? "SD 1.x default"
                              : "SD 2.x without a config: decided by a UNet probe";
  spec.config_path = FindConfig(checkpoint.path(), explicit_config);
  if (spec.config_path) {
    SDONNX_ASSIGN_OR_RETURN(ConfigValues config, ReadConfig(*spec.config_path));
    SDONNX_RETURN_IF_ERROR(ApplyConfig(config, &spec));
    spec.notes.push_back("config: " + *spec.config_path);
  }
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
    spec.notes.push_back("vae: ch " + std::to_string(spec.vae->base_channels) + ", levels " +
                         std::to_string(spec.vae->levels) + ", downsampling factor " +
                         std::to_string(spec.vae->downsample_factor) + ", latent channels " +
                         std::to_string(spec.vae->latent_channels));
  }
  if (spec.open_clip) {
    spec.notes.push_back("text encoder: OpenCLIP, width " + std::to_string(spec.open_clip->width) +
                         ", layers " + std::to_string(spec.open_clip->layers) + ", vocab " +
                         std::to_string(spec.open_clip->vocab_size));
  }
  if (spec.text) {
    spec.notes.push_back("text encoder: width " + std::to_string(spec.text->width) + ", layers " +
                         std::to_string(spec.text->layers) + ", vocab " +
                         std::to_string(spec.text->vocab_size));
  }
  return spec;
}

}  // namespace sdonnx
