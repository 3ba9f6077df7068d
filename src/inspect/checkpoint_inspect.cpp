#include "inspect/checkpoint_inspect.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "convert/prediction_probe.h"
#include "formats/diffusers_vae_keys.h"
#include "rebuild/source_record.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kExtraKeysKept = 20;
constexpr std::size_t kMissingKeysKept = 10;

// The component a key belongs to, by prefix. Text encoders are named after
// the family's slots when the family is known.
ComponentSummary* ComponentFor(const std::string& key, std::vector<ComponentSummary>* components) {
  for (ComponentSummary& c : *components) {
    if (!c.prefix.empty() && key.starts_with(c.prefix)) return &c;
  }
  // A VAE slot without a prefix (a standalone VAE) takes every key.
  for (ComponentSummary& c : *components) {
    if (c.name == "vae" && c.prefix.empty()) return &c;
  }
  return &components->back();  // "other"
}

std::vector<ComponentSummary> ComponentSlots(const CheckpointSummary& summary) {
  std::vector<ComponentSummary> slots = {
      {"unet", "UNet", kUNetPrefix, 0, 0, 0, {}},
      {"unet_ema", "UNet EMA weights", "model_ema.", 0, 0, 0, {}},
      {"vae", "VAE", kVaePrefix, 0, 0, 0, {}},
  };
  if (summary.spec) {
    for (const ExpectedComponent& c : summary.expected) {
      if (!c.name.starts_with("text_encoder")) continue;
      const std::string& prefix = c.stored_prefix.empty() ? c.prefix : c.stored_prefix;
      slots.push_back({c.name, c.title, prefix, 0, 0, 0, {}});
    }
  } else {
    slots.push_back({"text_encoder", "text encoder", "cond_stage_model.", 0, 0, 0, {}});
    slots.push_back({"text_encoder", "text encoder 1", "conditioner.embedders.0.", 0, 0, 0, {}});
    slots.push_back({"text_encoder_2", "text encoder 2", "conditioner.embedders.1.", 0, 0, 0, {}});
  }
  // A standalone VAE's keys may lack the checkpoint's prefix.
  if (summary.file_kind == "vae") slots[2].prefix = "";
  slots.push_back({"other", "other keys", "", 0, 0, 0, {}});
  return slots;
}

void CountTensors(CheckpointSummary* summary) {
  std::vector<ComponentSummary> slots = ComponentSlots(*summary);
  for (const TensorInfo& t : summary->checkpoint->tensors()) {
    ComponentSummary* c = ComponentFor(t.name, &slots);
    ++c->tensors;
    c->parameters += t.NumElements();
    c->bytes += t.nbytes;
    ++c->dtypes[std::string(DTypeName(t.dtype))];
    ++summary->tensors;
    summary->parameters += t.NumElements();
  }
  for (ComponentSummary& c : slots) {
    if (c.tensors > 0) summary->components.push_back(std::move(c));
  }
}

void FindExtraKeys(CheckpointSummary* summary) {
  if (!summary->spec) return;
  std::set<std::string> explained;
  for (const ExpectedComponent& c : summary->expected) {
    explained.insert(c.required.begin(), c.required.end());
  }
  for (const TensorInfo& t : summary->checkpoint->tensors()) {
    if (explained.contains(t.name) || IsKnownOptionalKey(t.name, summary->spec->family)) continue;
    summary->extra_keys.push_back(t.name);
  }
}

// position_ids should be the int64 values 0..n-1. Merged files sometimes
// store them as floats, and copying a float such as 75.99999 into the int64
// buffer of the loader truncates it to 75.
void CheckPositionIds(CheckpointSummary* summary) {
  const Checkpoint& checkpoint = *summary->checkpoint;
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (!t.name.ends_with("embeddings.position_ids")) continue;
    if (IsFloating(t.dtype)) {
      summary->warnings.push_back(
          "tensor '" + t.name + "' is " + std::string(DTypeName(t.dtype)) +
          " instead of I64; ComfyUI rounds float position_ids when it loads them, but loaders "
          "that copy them into an int64 buffer truncate values such as 75.99999 to 75");
    }
    Result<std::vector<float>> values = checkpoint.ReadAsFloat(t.name);
    if (!values.ok()) continue;
    for (std::size_t i = 0; i < values->size(); ++i) {
      if ((*values)[i] != static_cast<float>(i)) {
        char value[32];
        std::snprintf(value, sizeof(value), "%.9g", static_cast<double>((*values)[i]));
        summary->warnings.push_back("tensor '" + t.name + "' should count 0, 1, 2, ... but "
                                    "holds " + value + " at index " +
                                    std::to_string(i) + "; the text encoder sees wrong positions "
                                    "in loaders that read it (sdonnx ignores it)");
        break;
      }
    }
  }
}

void AddSpecWarnings(CheckpointSummary* summary) {
  const ModelSpec& spec = *summary->spec;
  if (spec.family == Family::kSD2 && spec.open_clip &&
      spec.open_clip->layers + 1 == spec.open_clip->full_layers) {
    summary->warnings.push_back(
        "text encoder: the last OpenCLIP layer (" + spec.open_clip->prefix +
        "transformer.resblocks." + std::to_string(spec.open_clip->layers) +
        ".*) is absent; SD 2.x never uses it, so the file still works, but loaders log its "
        "keys as missing");
  }
  if (!summary->checkpoint->HasPrefix(kUNetPrefix) && summary->checkpoint->HasPrefix("model_ema.")) {
    summary->warnings.push_back("the UNet exists only as EMA shadows (model_ema.*)");
  }
}

// Recognises the extras file of convert and the output of extract by their
// metadata.
void DescribeSdonnxFile(CheckpointSummary* summary) {
  const std::map<std::string, std::string>& metadata = summary->checkpoint->metadata();
  auto value = [&metadata](const std::string& key) {
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  if (value("sdonnx.component") == kExtrasComponent) {
    const std::string source = value("sdonnx.source_file");
    summary->file_kind = "sdonnx-extras";
    summary->file_title = "sdonnx extras file";
    summary->file_description =
        "the extras file that `sdonnx convert` writes beside the ONNX files of " +
        (source.empty() ? std::string("a checkpoint") : "'" + source + "'") +
        ": the tensors no graph uses and the record of the source, not a checkpoint";
    summary->file_advice = "run `sdonnx rebuild FOLDER -o OUT.safetensors` on the folder that "
                           "holds this file and the export's .onnx files to restore the "
                           "checkpoint";
  } else if (metadata.contains("sdonnx.extract")) {
    const std::string component = value("sdonnx.extract_component");
    summary->file_kind = "sdonnx-extract";
    summary->file_title = "sdonnx extract";
    summary->file_description =
        "the weights of one ONNX component (" +
        (component.empty() ? std::string("unknown") : component) + ", from '" +
        value("sdonnx.extract_source_file") + "') that `sdonnx extract` wrote, not a checkpoint";
    summary->file_advice = "run `sdonnx rebuild FOLDER -o OUT.safetensors` on the complete "
                           "export (every component's .onnx file, and for sdonnx's files the "
                           "extras file) to restore the checkpoint";
  }
}

// A file of VAE weights, such as the separate VAE files that UIs load
// beside a checkpoint (convert --vae reads them). Up to one tensor in ten
// may be something else (a few stray keys of another network), which
// convert --vae ignores and the description names.
void DescribeStandaloneVae(CheckpointSummary* summary) {
  const Checkpoint& file = *summary->checkpoint;
  if (!summary->file_kind.empty() || file.tensors().empty()) return;
  std::vector<std::string> others;
  for (const TensorInfo& t : file.tensors()) {
    if (!IsVaeTensorName(t.name, "first_stage_model.") && !IsVaeTensorName(t.name, "")) {
      others.push_back(t.name);
    }
  }
  if (others.size() * 10 > file.tensors().size()) return;
  std::string naming;
  // diffusers' naming also has encoder.conv_in.weight, so it is tested first.
  if (file.Has("first_stage_model.encoder.conv_in.weight")) {
    naming = "the checkpoint's first_stage_model. naming";
  } else if (HasDiffusersVaeKeys(file)) {
    naming = "diffusers' naming";
  } else if (file.Has("encoder.conv_in.weight")) {
    naming = "the original naming";
  } else {
    return;
  }
  // A few stray UNet keys can be enough for detection, but a checkpoint's
  // VAE is at most a fifth of its tensors, so the detection is dropped.
  if (summary->spec) {
    summary->spec.reset();
    summary->expected.clear();
    summary->detection_error = file.path() + ": only " + std::to_string(others.size()) + " of " +
                               std::to_string(file.tensors().size()) +
                               " tensors are outside the VAE, too few for a UNet";
  }
  summary->file_kind = "vae";
  summary->file_title = "standalone VAE";
  summary->file_description = "VAE weights in " + naming + ", with no " +
                              (others.empty() ? "" : "complete ") +
                              "UNet or text encoder: a VAE to use with a checkpoint, "
                              "not a checkpoint";
  if (!others.empty()) {
    summary->file_description += "; it also holds " + std::to_string(others.size()) +
                                 (others.size() == 1 ? " other tensor" : " other tensors") +
                                 " (first: '" + others.front() + "'), which convert --vae ignores";
  }
  summary->file_advice = "convert a checkpoint with this VAE: `sdonnx convert CHECKPOINT OUT "
                         "--vae " + summary->path + "`";
}

}  // namespace

std::vector<std::string> MissingWeights(const Checkpoint& checkpoint,
                                        const ExpectedComponent& component) {
  std::vector<std::string> missing;
  for (const std::string& key : component.required) {
    if (checkpoint.FindStored(key) == nullptr) missing.push_back(key);
  }
  return missing;
}

void FindIncompleteComponents(CheckpointSummary* summary) {
  summary->incomplete.clear();
  for (const ExpectedComponent& component : summary->expected) {
    if (!component.present) continue;
    std::vector<std::string> missing = MissingWeights(*summary->checkpoint, component);
    if (missing.empty()) continue;
    IncompleteComponentSummary incomplete;
    incomplete.name = component.name;
    incomplete.title = component.title;
    incomplete.expected_weights = component.required.size();
    incomplete.missing_weights = missing.size();
    missing.resize(std::min(missing.size(), kMissingKeysKept));
    incomplete.missing_keys = std::move(missing);
    summary->incomplete.push_back(std::move(incomplete));
  }
}

std::string FamilyTitle(Family family) {
  switch (family) {
    case Family::kSD1: return "SD 1.x";
    case Family::kSD2: return "SD 2.x";
    case Family::kSDXL: return "SDXL base";
    case Family::kSDXLRefiner: return "SDXL refiner";
  }
  return "unknown";
}

Result<CheckpointSummary> InspectCheckpoint(const std::string& path) {
  CheckpointSummary summary;
  summary.path = path;
  SDONNX_ASSIGN_OR_RETURN(summary.checkpoint, Checkpoint::Open(path));
  summary.format = SniffFormat(summary.checkpoint->mapped().bytes());
  // A zip that loaded is a torch checkpoint with data.pkl not first.
  if (summary.format == FileFormat::kZip) summary.format = FileFormat::kTorchZip;
  summary.file_bytes = summary.checkpoint->mapped().size();
  Result<ModelSpec> spec = DetectModel(*summary.checkpoint, std::nullopt);
  if (spec.ok()) {
    summary.spec = std::move(spec).value();
    summary.expected = ExpectedComponents(*summary.checkpoint, *summary.spec);
  } else {
    summary.detection_error = spec.status().message();
  }
  DescribeSdonnxFile(&summary);
  DescribeStandaloneVae(&summary);
  CountTensors(&summary);
  FindIncompleteComponents(&summary);
  FindExtraKeys(&summary);
  summary.warnings = summary.checkpoint->warnings();
  CheckPositionIds(&summary);
  if (summary.spec) AddSpecWarnings(&summary);
  return summary;
}

Status RunPredictionProbe(CheckpointSummary* summary) {
  if (!summary->spec || !summary->spec->needs_prediction_probe()) return Status::Ok();
  std::error_code ec;
  const fs::path temp = fs::temp_directory_path(ec);
  std::string pattern = ((ec ? fs::path("/tmp") : temp) / "sdonnx-probe-XXXXXX").string();
  if (CreateRegisteredTemporaryFolder(&pattern) != 0) {
    return Status::Error(pattern + ": cannot create a temporary folder for the UNet probe: " +
                         std::strerror(errno));
  }
  // A file with only EMA weights is probed with them, as convert does.
  Checkpoint& checkpoint = *summary->checkpoint;
  const bool ema_only = !checkpoint.HasPrefix(kUNetPrefix) && checkpoint.HasPrefix("model_ema.");
  checkpoint.UseEmaUNet(ema_only);
  Status status = ProbePredictionType(checkpoint, pattern, &*summary->spec);
  checkpoint.UseEmaUNet(false);
  fs::remove_all(pattern, ec);
  UnregisterTemporary(pattern);
  return status;
}

nlohmann::json CheckpointSummaryJson(const CheckpointSummary& summary) {
  using nlohmann::json;
  json out = {{"kind", "checkpoint"},
              {"path", summary.path},
              {"format", FileFormatId(summary.format)},
              {"file_bytes", summary.file_bytes},
              {"tensors", summary.tensors},
              {"parameters", summary.parameters}};
  if (summary.spec) {
    const ModelSpec& spec = *summary.spec;
    const bool undecided = spec.needs_prediction_probe();
    out["family"] = FamilyName(spec.family);
    out["family_basis"] = spec.family_basis;
    out["variant"] = spec.variant;
    out["prediction_type"] = undecided ? json(nullptr) : json(spec.prediction_type);
    out["prediction_basis"] = spec.prediction_basis;
    out["config"] = spec.config_path ? json(*spec.config_path) : json(nullptr);
  } else {
    out["family"] = nullptr;
    out["detection_error"] = summary.detection_error;
  }
  out["file_kind"] = summary.file_kind.empty() ? "checkpoint" : summary.file_kind;
  if (!summary.file_kind.empty()) {
    out["file_description"] = summary.file_description;
    out["advice"] = summary.file_advice;
  }

  json components = json::object();
  for (const ComponentSummary& c : summary.components) {
    components[c.name] = {{"title", c.title},     {"prefix", c.prefix},
                          {"tensors", c.tensors}, {"parameters", c.parameters},
                          {"bytes", c.bytes},     {"dtypes", c.dtypes}};
  }
  out["components"] = components;

  json missing = json::array();
  for (const ExpectedComponent& c : summary.expected) {
    if (!c.present) missing.push_back(c.name);
  }
  out["missing_components"] = missing;

  json incomplete = json::array();
  for (const IncompleteComponentSummary& c : summary.incomplete) {
    incomplete.push_back({{"name", c.name},
                          {"title", c.title},
                          {"expected_weights", c.expected_weights},
                          {"missing_weights", c.missing_weights},
                          {"missing_keys", c.missing_keys}});
  }
  out["incomplete_components"] = incomplete;

  out["ema"] = summary.checkpoint->HasPrefix("model_ema.diffusion_model");
  out["extra_keys"] = {{"count", summary.extra_keys.size()},
                       {"first", json(std::vector<std::string>(
                                     summary.extra_keys.begin(),
                                     summary.extra_keys.begin() +
                                         std::min(summary.extra_keys.size(), kExtraKeysKept)))}};
  out["metadata"] = summary.checkpoint->metadata();
  out["warnings"] = summary.warnings;
  return out;
}

}  // namespace sdonnx
