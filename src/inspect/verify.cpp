#include "inspect/verify.h"

#include <algorithm>
#include <map>

#include "networks/clip_text.h"
#include "networks/open_clip_text.h"
#include "networks/unet.h"
#include "networks/vae.h"

namespace sdonnx {
namespace {

constexpr std::size_t kMissingKeysKept = 10;
constexpr const char* kWeightDTypesText = "F32, F16 or BF16";

// The ComfyUI and diffusers messages are quoted from ComfyUI's comfy/sd.py
// and from error reports of both projects. AUTOMATIC1111's behaviour is
// read from its modules/sd_models.py and sd_disable_initialization.py (1.6
// and later), not observed by running it.
const char* kA1111EmptyLayers =
    "AUTOMATIC1111 (1.6 and later): creates each layer without data and fills it from the file; "
    "layers the file lacks stay empty, and loading typically stops with "
    "\"NotImplementedError: Cannot copy out of meta tensor; no data!\"";
const char* kComfyNoModelType =
    "ComfyUI: Load Checkpoint stops with \"ERROR: Could not detect model type of: <path>\"";
const char* kComfyNoClip =
    "ComfyUI: Load Checkpoint logs \"no CLIP/text encoder weights in checkpoint, the text encoder "
    "model will not be loaded.\", and CLIP Text Encode then stops with \"ERROR: clip input is "
    "invalid: None\" (\"your checkpoint does not contain a valid clip or text encoder model\")";
const char* kComfyNoVae =
    "ComfyUI: Load Checkpoint logs \"No VAE weights detected, VAE not initalized.\", and VAE "
    "Decode then stops with \"ERROR: VAE is invalid: None\" (\"your checkpoint does not contain "
    "a valid VAE\")";
const char* kA1111NoVae =
    "AUTOMATIC1111: works only with a separate VAE, chosen in Settings > SD VAE, or with SD VAE "
    "on Automatic a file in models/VAE whose name starts with the checkpoint's name (older versions: "
    "<stem>.vae.safetensors beside the checkpoint)";
const char* kComfyPartial =
    "ComfyUI: loads the file, logs the absent keys as missing, and runs with those layers at "
    "their initial values, so the images are wrong";

std::string DiffusersNoText(const std::string& component) {
  const char* model_class =
      component == "text_encoder_2" ? "CLIPTextModelWithProjection" : "CLIPTextModel";
  return std::string("diffusers from_single_file (SD.Next and other diffusers-based tools): "
                     "\"Failed to load ") +
         model_class + ". Weights for this component appear to be missing in the checkpoint.\"";
}

VerifyProblem AbsentComponent(const ExpectedComponent& component) {
  VerifyProblem problem;
  problem.component = component.name;
  problem.title = component.title;
  problem.what = "absent (no " + component.prefix + "* keys)";
  if (component.name == "vae") {
    problem.loader_messages = {kComfyNoVae, kA1111NoVae};
    problem.advice = "bake a VAE into the checkpoint (a checkpoint merger can), or keep the VAE "
                     "file beside it and load it separately (ComfyUI: Load VAE; sdonnx convert: "
                     "--vae FILE)";
  } else {
    problem.loader_messages = {kComfyNoClip, DiffusersNoText(component.name), kA1111EmptyLayers};
    problem.advice = "get the complete checkpoint: a text encoder cannot be added back without "
                     "the original weights";
  }
  return problem;
}

// AUTOMATIC1111 looks for the text encoder only under the original
// names, such as cond_stage_model.transformer.text_model.*.
VerifyProblem RenamedComponent(const ExpectedComponent& component) {
  VerifyProblem problem;
  problem.component = component.name;
  problem.title = component.title;
  problem.what = "stored under " + component.stored_prefix + "* instead of " + component.prefix +
                 "*";
  problem.loader_messages = {
      std::string("AUTOMATIC1111 finds no text encoder key under the original names, so it "
                  "treats the file as one without a text encoder: ") +
      kA1111EmptyLayers};
  problem.advice = "sdonnx convert reads the file as it is; for AUTOMATIC1111, save the "
                   "checkpoint again with the original names";
  return problem;
}

// Whether the EMA shadow of every UNet key in `keys` is stored.
bool EmaHasAll(const Checkpoint& checkpoint, const std::vector<std::string>& keys) {
  return std::all_of(keys.begin(), keys.end(), [&checkpoint](const std::string& key) {
    return checkpoint.FindStored(Checkpoint::EmaKey(key)) != nullptr;
  });
}

VerifyProblem PartialComponent(const Checkpoint& checkpoint, const ExpectedComponent& component,
                               std::vector<std::string> missing) {
  VerifyProblem problem;
  problem.component = component.name;
  problem.title = component.title;
  problem.missing_count = missing.size();
  problem.what = std::to_string(missing.size()) + " of " +
                 std::to_string(component.required.size()) + " weights missing (first: '" +
                 missing.front() + "')";
  problem.loader_messages = {kComfyPartial, kA1111EmptyLayers};
  problem.advice = "the file is truncated or was pruned too far: download it again, or get the "
                   "original checkpoint";
  if (component.name == "unet" && EmaHasAll(checkpoint, missing)) {
    problem.advice += "; the EMA weights (model_ema.*) include the missing ones, so `sdonnx "
                      "convert --ema` can still convert a complete UNet";
  }
  missing.resize(std::min(missing.size(), kMissingKeysKept));
  problem.missing_keys = std::move(missing);
  return problem;
}

// PyTorch's load_state_dict raises on a size mismatch whether or not it is
// strict, so both programs stop on such a file.
VerifyProblem WrongShapes(const ExpectedComponent& component,
                          std::vector<ShapeMismatch> mismatches) {
  VerifyProblem problem;
  problem.component = component.name;
  problem.title = component.title;
  problem.wrong_shape_count = mismatches.size();
  const ShapeMismatch& first = mismatches.front();
  problem.what = std::to_string(mismatches.size()) + " of " +
                 std::to_string(component.required.size()) +
                 " weights have the wrong shape (first: '" + first.key + "' is " +
                 ShapeText(first.found) + " instead of " + ShapeText(first.expected) + ")";
  mismatches.resize(std::min(mismatches.size(), kMissingKeysKept));
  problem.wrong_shapes = std::move(mismatches);
  problem.loader_messages = {
      "AUTOMATIC1111 and ComfyUI: loading stops with PyTorch's \"size mismatch for <key>: copying "
      "a param with shape ... from checkpoint, the shape in current model is ...\""};
  problem.advice = "the file is damaged or was edited: download it again, or get the original "
                   "checkpoint";
  return problem;
}

// PyTorch's load_state_dict copies each tensor into its layer with
// Tensor.copy_, which converts the dtype, so an integer or boolean weight
// loads without an error.
// NOTE: read from PyTorch's load_state_dict, not observed by running
// AUTOMATIC1111 or ComfyUI on such a file.
VerifyProblem WrongDTypes(const ExpectedComponent& component,
                          std::vector<DTypeMismatch> mismatches) {
  VerifyProblem problem;
  problem.component = component.name;
  problem.title = component.title;
  problem.wrong_dtype_count = mismatches.size();
  const DTypeMismatch& first = mismatches.front();
  problem.what = std::to_string(mismatches.size()) + " of " +
                 std::to_string(component.required.size()) +
                 " weights have a dtype that is not floating point (first: '" + first.key +
                 "' is " + std::string(DTypeName(first.found)) + " instead of " +
                 kWeightDTypesText + ")";
  mismatches.resize(std::min(mismatches.size(), kMissingKeysKept));
  problem.wrong_dtypes = std::move(mismatches);
  problem.loader_messages = {
      "AUTOMATIC1111 and ComfyUI: PyTorch's load_state_dict converts the values to the layer's "
      "floating-point dtype, so loading does not stop, but the layers then hold whole numbers "
      "instead of trained weights, and the images are wrong"};
  problem.advice = "the file is damaged or was written by a broken tool: download it again, or "
                   "get the original checkpoint";
  return problem;
}

// F64 weights load, since PyTorch converts them, but take twice the space
// of F32.
void WarnAboutF64Weights(const Checkpoint& checkpoint, const ExpectedComponent& component,
                         std::vector<std::string>* warnings) {
  std::size_t count = 0;
  std::string first;
  for (const std::string& key : component.required) {
    const TensorInfo* tensor = checkpoint.Find(key);
    if (tensor == nullptr || tensor->dtype != DType::kF64) continue;
    if (count++ == 0) first = key;
  }
  if (count == 0) return;
  warnings->push_back(component.title + ": " + std::to_string(count) + " of " +
                      std::to_string(component.required.size()) + " weights are F64 (first: '" +
                      first + "'); loaders convert them to their own dtype, so the file works, "
                      "but it is twice the size of an F32 file");
}

VerifyProblem Unreadable(const std::string& component, const std::string& title,
                         const std::string& error) {
  VerifyProblem problem;
  problem.component = component;
  problem.title = title;
  problem.what = "incomplete: " + error;
  problem.loader_messages = {kComfyPartial, kA1111EmptyLayers};
  problem.advice = "the file is truncated or damaged: download it again, or get the original "
                   "checkpoint";
  return problem;
}

// Without a UNet (model.diffusion_model.*) neither program can tell the
// model type.
VerifyProblem NoUNet(const Checkpoint& checkpoint, const std::string& error) {
  VerifyProblem problem = Unreadable("unet", "UNet", error);
  problem.loader_messages = {kComfyNoModelType, kA1111EmptyLayers};
  const bool has_unet = checkpoint.HasPrefix(kUNetPrefix);
  if (!has_unet && checkpoint.HasPrefix("model_ema.diffusion_model")) {
    problem.what = "only EMA weights (model_ema.*) are present, and neither program reads them; "
                   "the file has no model.diffusion_model.* keys";
    problem.advice = "use a checkpoint with the UNet under model.diffusion_model.*, or convert "
                     "the EMA weights with `sdonnx convert --ema`";
  } else if (!has_unet) {
    problem.what = "absent (no model.diffusion_model.* keys)";
    problem.advice = "if this is a VAE or a text encoder on its own, load it with the matching "
                     "loader; otherwise get the complete checkpoint";
  }
  return problem;
}

// Finds the component whose shapes stopped the family detection, so that
// the problem names it.
VerifyProblem UndetectedModel(const Checkpoint& checkpoint, const std::string& detection_error) {
  UNetSpec unet;
  if (Status status = ReadUNetShapes(checkpoint, &unet); !status.ok()) {
    return NoUNet(checkpoint, status.message());
  }
  if (checkpoint.HasPrefix(kVaePrefix)) {
    VaeSpec vae;
    if (Status status = ReadVaeShapes(checkpoint, &vae); !status.ok()) {
      return Unreadable("vae", "VAE", status.message());
    }
  }
  for (const char* prefix : {"cond_stage_model.transformer.text_model.",
                             "conditioner.embedders.0.transformer.text_model."}) {
    ClipTextSpec text;
    text.prefix = prefix;
    Status status = checkpoint.HasPrefix(prefix) ? ReadClipTextShapes(checkpoint, &text)
                                                 : Status::Ok();
    if (!status.ok()) return Unreadable("text_encoder", "text encoder", status.message());
  }
  for (const char* prefix : {kSd2TextPrefix, "conditioner.embedders.0.model.",
                             "conditioner.embedders.1.model."}) {
    OpenClipTextSpec text;
    text.prefix = prefix;
    Status status = checkpoint.HasPrefix(prefix) ? ReadOpenClipTextShapes(checkpoint, &text)
                                                 : Status::Ok();
    if (!status.ok()) return Unreadable("text_encoder", "text encoder", status.message());
  }
  VerifyProblem problem = Unreadable("model", "checkpoint", detection_error);
  problem.what = "the family cannot be detected: " + detection_error;
  problem.advice = "fix what the message names (for a YAML config beside the file: correct or "
                   "remove it)";
  return problem;
}

void CheckComponents(VerifyReport* report) {
  const Checkpoint& checkpoint = *report->summary.checkpoint;
  bool others_absent = true;
  for (const ExpectedComponent& component : report->summary.expected) {
    if (!component.present) {
      report->problems.push_back(AbsentComponent(component));
      continue;
    }
    if (component.name != "unet") others_absent = false;
    if (!component.stored_prefix.empty()) report->problems.push_back(RenamedComponent(component));
    std::vector<std::string> missing = MissingWeights(checkpoint, component);
    if (!missing.empty()) {
      report->problems.push_back(PartialComponent(checkpoint, component, std::move(missing)));
    }
    std::vector<ShapeMismatch> wrong = FindShapeMismatches(checkpoint, component);
    if (!wrong.empty()) report->problems.push_back(WrongShapes(component, std::move(wrong)));
    std::vector<DTypeMismatch> wrong_dtypes = FindNonFloatWeights(checkpoint, component);
    if (!wrong_dtypes.empty()) {
      report->problems.push_back(WrongDTypes(component, std::move(wrong_dtypes)));
    }
    WarnAboutF64Weights(checkpoint, component, &report->warnings);
  }
  if (others_absent && !report->problems.empty()) {
    report->diagnosis =
        "this file holds only the UNet, as a diffusion-model-only download or `sdonnx extract` "
        "of a unet ONNX file does; ComfyUI loads such a file with Load Diffusion Model (from "
        "models/unet) plus a separate CLIP and VAE; for a single-file checkpoint, get the "
        "original or rebuild it from a complete export";
  }
}

// Names the files that sdonnx writes and that are not checkpoints (the
// extras file of convert, the output of extract), which the summary
// recognised by their metadata. Returns false for other files.
bool RecognizeSdonnxFile(VerifyReport* report) {
  const CheckpointSummary& summary = report->summary;
  // A standalone VAE is checked as a checkpoint: a UI fails on it as on any
  // file without a UNet. VerifyCheckpoint then adds how to use it.
  if (summary.file_kind.empty() || summary.file_kind == "vae") return false;
  report->file_kind = summary.file_kind;
  VerifyProblem problem;
  problem.component = "file";
  problem.title = summary.file_title;
  problem.what = summary.file_description;
  problem.advice = summary.file_advice;
  report->problems.push_back(std::move(problem));
  return true;
}

// Reads the architecture from the EMA weights when the regular UNet keys
// are too incomplete to detect it, so that the missing keys can be listed
// one by one instead of the whole UNet being reported unreadable.
void DetectFromEmaWeights(CheckpointSummary* summary) {
  Checkpoint& checkpoint = *summary->checkpoint;
  if (!checkpoint.HasPrefix(kUNetPrefix) || !checkpoint.HasPrefix("model_ema.diffusion_model")) {
    return;
  }
  checkpoint.UseEmaUNet(true);
  Result<ModelSpec> spec = DetectModel(checkpoint, std::nullopt);
  checkpoint.UseEmaUNet(false);
  if (!spec.ok()) return;
  summary->spec = std::move(spec).value();
  summary->spec->family_basis += " (read from the EMA weights, since the UNet is incomplete)";
  summary->expected = ExpectedComponents(checkpoint, *summary->spec);
  summary->detection_error.clear();
  FindIncompleteComponents(summary);
}

// A partial rebuild (`sdonnx rebuild --allow-partial`) lacks what its
// export lacked, so downloading it again cannot help: the problems then
// point at the export instead.
void NotePartialRebuild(VerifyReport* report) {
  const std::map<std::string, std::string>& metadata = report->summary.checkpoint->metadata();
  const auto rebuild = metadata.find("sdonnx.rebuild");
  if (rebuild == metadata.end() || rebuild->second != "partial") return;
  const auto missing = metadata.find("sdonnx.rebuild_missing_components");
  std::string left_out = missing == metadata.end() || missing->second.empty()
                             ? std::string()
                             : " without the components " + missing->second;
  const auto omitted = metadata.find("sdonnx.rebuild_omitted_tensors");
  if (omitted != metadata.end() && omitted->second != "0") {
    left_out += (left_out.empty() ? " without " : ", and without ") + omitted->second +
                (omitted->second == "1" ? " source tensor" : " source tensors");
  }
  report->diagnosis = "this file is a partial rebuild: `sdonnx rebuild --allow-partial` wrote it" +
                      left_out + " (metadata sdonnx.rebuild = partial)";
  const auto differs = metadata.find("sdonnx.rebuild_file_sha256_differs");
  if (differs != metadata.end() && differs->second == "true") {
    report->diagnosis += "; every tensor matched its digest, but the file as a whole did not "
                         "match the source's SHA-256 (sdonnx.rebuild_file_sha256_differs)";
  }
  for (VerifyProblem& problem : report->problems) {
    problem.advice = "rebuild it from a complete export (every component's .onnx file and the "
                     "extras file), or use the original checkpoint";
  }
}

}  // namespace

Result<VerifyReport> VerifyCheckpoint(const std::string& path) {
  VerifyReport report;
  SDONNX_ASSIGN_OR_RETURN(report.summary, InspectCheckpoint(path));
  if (RecognizeSdonnxFile(&report)) return report;
  if (!report.summary.spec) DetectFromEmaWeights(&report.summary);
  const CheckpointSummary& summary = report.summary;
  if (!summary.spec) {
    report.problems.push_back(UndetectedModel(*summary.checkpoint, summary.detection_error));
    if (summary.file_kind == "vae") {
      report.file_kind = summary.file_kind;
      VerifyProblem& problem = report.problems.back();
      problem.what += "; the file is a standalone VAE (" + summary.file_description + ")";
      problem.advice = "load it as a VAE (AUTOMATIC1111: models/VAE; ComfyUI: Load VAE), or " +
                       summary.file_advice;
    }
  } else {
    CheckComponents(&report);
  }
  NotePartialRebuild(&report);
  report.warnings.insert(report.warnings.begin(), summary.warnings.begin(),
                         summary.warnings.end());
  if (!summary.extra_keys.empty()) {
    report.warnings.push_back(std::to_string(summary.extra_keys.size()) +
                              " keys belong to no component (first: '" +
                              summary.extra_keys.front() +
                              "'); loaders ignore them, and they only take space");
  }
  return report;
}

nlohmann::json VerifyReportJson(const VerifyReport& report) {
  using nlohmann::json;
  json problems = json::array();
  for (const VerifyProblem& p : report.problems) {
    json wrong_shapes = json::array();
    for (const ShapeMismatch& m : p.wrong_shapes) {
      wrong_shapes.push_back({{"key", m.key}, {"expected", m.expected}, {"found", m.found}});
    }
    json wrong_dtypes = json::array();
    for (const DTypeMismatch& m : p.wrong_dtypes) {
      wrong_dtypes.push_back({{"key", m.key},
                              {"expected", {"F32", "F16", "BF16"}},
                              {"found", DTypeName(m.found)}});
    }
    problems.push_back({{"component", p.component},
                        {"title", p.title},
                        {"what", p.what},
                        {"missing_count", p.missing_count},
                        {"missing_keys", p.missing_keys},
                        {"wrong_shape_count", p.wrong_shape_count},
                        {"wrong_shapes", wrong_shapes},
                        {"wrong_dtype_count", p.wrong_dtype_count},
                        {"wrong_dtypes", wrong_dtypes},
                        {"loader_messages", p.loader_messages},
                        {"advice", p.advice}});
  }
  return {{"path", report.summary.path},
          {"ok", report.ok()},
          {"file_kind", report.file_kind.empty() ? json("checkpoint") : json(report.file_kind)},
          {"family", report.summary.spec ? json(FamilyName(report.summary.spec->family))
                                         : json(nullptr)},
          {"diagnosis", report.diagnosis},
          {"problems", problems},
          {"warnings", report.warnings}};
}

}  // namespace sdonnx
