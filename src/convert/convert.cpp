#include "convert/convert.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <set>

#include "convert/component_settings.h"
#include "convert/prediction_probe.h"
#include "formats/checkpoint.h"
#include "formats/conversion_id.h"
#include "formats/diffusers_vae_keys.h"
#include "model/expected_keys.h"
#include "model/shape_check.h"
#include "networks/clip_text.h"
#include "networks/open_clip_text.h"
#include "networks/unet.h"
#include "networks/vae.h"
#include "rebuild/source_digests.h"
#include "rebuild/source_record.h"
#include "runtime/ort_session.h"
#include "util/log.h"
#include "util/output_move.h"
#include "util/temporaries.h"
#include "version.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

constexpr char kStagingPrefix[] = ".sdonnx-staging-";
// The file inside a staging folder whose flock marks the folder's run as
// alive. A run killed with SIGKILL leaves its staging folder behind, and
// the next convert into the same output folder removes it.
constexpr char kStagingLockName[] = "sdonnx.lock";

std::map<std::string, std::string> CommonMetadata(const ModelSpec& spec,
                                                  const std::string& source_path) {
  std::map<std::string, std::string> metadata = {
      {"sdonnx.version", SDONNX_VERSION},
      {"sdonnx.family", FamilyName(spec.family)},
      {"sdonnx.variant", spec.variant},
      {"sdonnx.prediction_type", spec.prediction_type},
      {"sdonnx.prediction_type_basis", spec.prediction_basis},
      {"sdonnx.vae_scaling_factor", std::to_string(spec.vae_scaling_factor)},
      {"sdonnx.source_file", fs::path(source_path).filename().string()},
  };
  metadata["sdonnx.family_basis"] = spec.family_basis;
  metadata["sdonnx.unet_weights"] = spec.ema_unet ? "ema" : "main";
  metadata["sdonnx.text_context_output"] = spec.text_context_output;
  metadata["sdonnx.text_pad_id"] = std::to_string(spec.text_pad_id);
  if (!spec.text_2_context_output.empty()) {
    metadata["sdonnx.text_2_context_output"] = spec.text_2_context_output;
    metadata["sdonnx.text_2_pad_id"] = std::to_string(spec.text_2_pad_id);
  }
  if (spec.vae) {
    metadata["sdonnx.vae_downsample_factor"] = std::to_string(spec.vae->downsample_factor);
    metadata["sdonnx.latent_channels"] = std::to_string(spec.vae->latent_channels);
  }
  return metadata;
}

struct ComponentPlan {
  std::string component;
  std::function<Status(GraphBuilder&)> build;
  const Checkpoint* source = nullptr;  // The checkpoint the weights are read from.
};

std::vector<ComponentPlan> PlanComponents(const ModelSpec& spec, const Checkpoint& checkpoint,
                                          const Checkpoint& vae_source) {
  std::vector<ComponentPlan> plan;
  plan.push_back(
      {"unet", [&spec](GraphBuilder& b) { return BuildUNet(b, spec.unet); }, &checkpoint});
  if (spec.vae) {
    plan.push_back({"vae_encoder",
                    [&spec](GraphBuilder& b) { return BuildVaeEncoder(b, *spec.vae); },
                    &vae_source});
    plan.push_back({"vae_decoder",
                    [&spec](GraphBuilder& b) { return BuildVaeDecoder(b, *spec.vae); },
                    &vae_source});
  }
  if (spec.text) {
    plan.push_back({"clip_text", [&spec](GraphBuilder& b) { return BuildClipText(b, *spec.text); },
                    &checkpoint});
  }
  if (spec.open_clip) {
    plan.push_back({spec.open_clip_component,
                    [&spec](GraphBuilder& b) { return BuildOpenClipText(b, *spec.open_clip); },
                    &checkpoint});
  }
  return plan;
}

// Warns about the tensors of a --vae file outside its VAE, such as a whole
// checkpoint's, because only the VAE is read.
void WarnAboutNonVaeKeys(const Checkpoint& vae, const std::string& prefix) {
  std::size_t others = 0;
  std::string first;
  for (const TensorInfo& t : vae.tensors()) {
    if (IsVaeTensorName(t.name, prefix)) continue;
    if (others++ == 0) first = t.name;
  }
  if (others == 0) return;
  LogWarning("--vae " + vae.path() + ": " + std::to_string(others) +
             (others == 1 ? " tensor outside the VAE is" : " tensors outside the VAE are") +
             " ignored (first: '" + first + "')");
}

// Opens a separate VAE file and reads its architecture into spec->vae.
Result<std::unique_ptr<Checkpoint>> OpenSeparateVae(const std::string& path, ModelSpec* spec) {
  Result<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(path);
  if (!opened.ok()) return opened.status().WithContext("--vae");
  std::unique_ptr<Checkpoint> vae = std::move(opened).value();
  VaeSpec vae_spec;
  if (vae->Has("first_stage_model.encoder.conv_in.weight")) {
    vae_spec.prefix = "first_stage_model.";
  } else if (HasDiffusersVaeKeys(*vae)) {
    vae_spec.prefix = "";
    vae->AddAliases(DiffusersVaeAliases(*vae));
    spec->notes.push_back("vae: diffusers naming, read through the original key names");
  } else if (vae->Has("encoder.conv_in.weight")) {
    vae_spec.prefix = "";
  } else {
    return Status::Error(path + ": not a VAE (no 'encoder.conv_in.weight' or "
                         "'first_stage_model.encoder.conv_in.weight')");
  }
  SDONNX_RETURN_IF_ERROR(ReadVaeShapes(*vae, &vae_spec));
  WarnAboutNonVaeKeys(*vae, vae_spec.prefix);
  spec->vae = vae_spec;
  std::erase_if(spec->notes, [](const std::string& note) { return note.starts_with("vae: ch "); });
  spec->notes.push_back(VaeNote(vae_spec));
  spec->notes.push_back("vae: from " + path + " (in place of the checkpoint's)");
  return vae;
}

// A UNet tensor that the graph did not use means a block the layout walk
// did not recognise, or one whose other tensors are missing; either way the
// network would be silently smaller than the checkpoint's.
Status CheckAllUNetWeightsUsed(const GraphBuilder& builder, const ModelSpec& spec) {
  const std::string prefix = spec.ema_unet ? "model_ema.diffusion_model" : spec.unet.prefix;
  const std::vector<std::string> unused = builder.UnusedKeys(prefix);
  if (unused.empty()) return Status::Ok();
  return Status::Error("UNet: " + std::to_string(unused.size()) +
                       " tensors are not part of any recognised block, first '" + unused.front() +
                       "'; the checkpoint is incomplete (a tensor of that block is missing) or "
                       "has an unknown layout");
}

// Adds to a failed UNet build whether the EMA shadows (model_ema.*) hold
// the missing tensors, as verify does.
Status WithEmaAdvice(const Checkpoint& checkpoint, const ModelSpec& spec, Status status) {
  if (status.ok() || spec.ema_unet || !checkpoint.HasPrefix("model_ema.diffusion_model")) {
    return status;
  }
  const ExpectedComponent unet = ExpectedComponents(checkpoint, spec).front();
  bool ema_has_missing = true;
  for (const std::string& key : unet.required) {
    if (checkpoint.FindStored(key) == nullptr &&
        checkpoint.FindStored(Checkpoint::EmaKey(key)) == nullptr) {
      ema_has_missing = false;
      break;
    }
  }
  return Status::Error(
      status.message() +
      (ema_has_missing ? "; the file also has EMA weights (model_ema.*), which include the "
                         "missing tensors: `sdonnx convert --ema` converts those"
                       : "; the file also has EMA weights (model_ema.*), but they lack some of "
                         "the missing tensors too, so `--ema` cannot help: get the original "
                         "checkpoint"));
}

// Moves every staged file into the output folder, all or none
// (MoveFilesIntoPlace). Without `overwrite`, no existing file is replaced.
Status MoveIntoPlace(const fs::path& out_dir, bool overwrite, ConvertReport* report) {
  std::vector<WrittenFile*> files = {&report->extras};
  for (ConvertedComponent& c : report->components) {
    for (WrittenFile& f : c.files) files.push_back(&f);
  }
  std::vector<FileMove> moves;
  for (const WrittenFile* f : files) {
    moves.push_back({f->path, (out_dir / fs::path(f->path).filename()).string(), overwrite});
  }
  SDONNX_RETURN_IF_ERROR(MoveFilesIntoPlace(moves));
  for (std::size_t i = 0; i < files.size(); ++i) files[i]->path = moves[i].to;
  return Status::Ok();
}

// generate, inspect and rebuild read one export per folder, so a folder
// with another checkpoint's UNet is refused, with --force too.
Status CheckNoOtherExport(const fs::path& out_dir, const std::string& stem) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("unet_") && name.ends_with(".onnx") &&
        name != "unet_" + stem + ".onnx") {
      return Status::Error("--output-dir " + out_dir.string() +
                           " already holds the export of another checkpoint (" + name +
                           "); generate, inspect and rebuild read one export per folder, so "
                           "give an empty or new folder");
    }
  }
  return Status::Ok();
}

Status CheckOutputs(const fs::path& out_dir, const std::vector<ComponentPlan>& plan,
                    const std::string& stem, bool overwrite) {
  SDONNX_RETURN_IF_ERROR(CheckNoOtherExport(out_dir, stem));
  if (overwrite) return Status::Ok();
  std::vector<std::string> names = {ExtrasFileName(stem)};
  for (const ComponentPlan& p : plan) {
    names.push_back(p.component + "_" + stem + ".onnx");
    names.push_back(p.component + "_" + stem + ".onnx.data");
  }
  std::vector<std::string> existing;
  for (const std::string& name : names) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(out_dir / name, ec))) existing.push_back(name);
  }
  if (existing.empty()) return Status::Ok();
  std::string message = (out_dir / existing.front()).string() +
                        ": already exists; pass --force to overwrite it";
  if (existing.size() > 1) {
    message += " and the " + std::to_string(existing.size() - 1) + " other existing output" +
               (existing.size() > 2 ? "s" : "") + " of this run (";
    for (std::size_t i = 1; i < existing.size(); ++i) {
      message += (i > 1 ? ", " : "") + existing[i];
    }
    message += ")";
  }
  return Status::Error(message);
}

// Returns whether the UNet is built from the EMA shadows: when asked for,
// or when the file has no other UNet weights.
Result<bool> ChooseUNetWeights(const Checkpoint& checkpoint, bool want_ema) {
  const std::string probe = "model.diffusion_model.input_blocks.0.0.weight";
  const bool has_main = checkpoint.FindStored(probe) != nullptr;
  const bool has_ema = checkpoint.FindStored(Checkpoint::EmaKey(probe)) != nullptr;
  if (want_ema && !has_ema) {
    return Status::Error(checkpoint.path() + ": --ema was given but the file has no EMA UNet "
                         "weights (no '" + Checkpoint::EmaKey(probe) + "'); drop --ema");
  }
  if (!has_main && has_ema) {
    LogInfo(checkpoint.path() + ": only EMA UNet weights are present; converting those");
    return true;
  }
  return want_ema;
}

// position_ids is never read (positions are generated in the graph), but a
// float copy with values off the integers shows a damaged merge.
void WarnAboutPositionIds(const Checkpoint& checkpoint) {
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (!t.name.ends_with("embeddings.position_ids") || !IsFloating(t.dtype)) continue;
    Result<std::vector<float>> values = checkpoint.ReadAsFloat(t.name);
    if (!values.ok()) continue;
    float worst = 0;
    for (std::size_t i = 0; i < values->size(); ++i) {
      worst = std::max(worst, std::fabs((*values)[i] - static_cast<float>(i)));
    }
    LogWarning(checkpoint.path() + ": '" + t.name + "' is stored as " +
               std::string(DTypeName(t.dtype)) + (worst > 0 ? " with values off by up to " +
                                                                  std::to_string(worst)
                                                            : std::string()) +
               "; it is ignored, since positions are generated in the graph");
  }
}

// The settings a run's output depends on besides the source file, as text
// for ConversionId: the sdonnx version, every option and the metadata that
// detection produced.
std::string RunSettings(const ConvertOptions& options,
                        const std::map<std::string, std::string>& metadata) {
  std::string text = std::string("version=") + SDONNX_VERSION;
  auto add = [&text](const std::string& key, const std::string& value) {
    text += "\n" + key + "=" + value;
  };
  add("opset", std::to_string(options.opset));
  add("external_data", std::to_string(static_cast<int>(options.external_data)));
  add("ema", options.ema ? "1" : "0");
  add("fp16", options.fp16 ? "1" : "0");
  add("fp32_weights", options.fp32_weights ? "1" : "0");
  add("fp16_sdxl_vae_decoder", options.fp16_sdxl_vae_decoder ? "1" : "0");
  add("ort_attention", options.ort_attention ? "1" : "0");
  add("attention_chunks",
      std::to_string(options.attention_chunks.value_or(kDefaultAttentionChunks)));
  add("prediction_type", options.prediction_type.value_or(""));
  if (options.static_shape) {
    add("static_shape", std::to_string(options.static_shape->width) + "x" +
                            std::to_string(options.static_shape->height) + "x" +
                            std::to_string(options.static_shape->batch));
  }
  // NOTE: a separate VAE file or config is named by its path, size and
  // modification time, not its contents, which are not hashed.
  for (const auto& [key, path] : {std::pair{"vae", options.vae_path},
                                  std::pair{"config", options.config_path}}) {
    if (!path) continue;
    std::error_code ec;
    const auto size = fs::file_size(*path, ec);
    const auto time = fs::last_write_time(*path, ec).time_since_epoch().count();
    add(key, fs::absolute(*path, ec).string() + " " + std::to_string(size) + " " +
                 std::to_string(time));
  }
  for (const auto& [key, value] : metadata) add("metadata." + key, value);
  return text;
}

// Writes the source tensors that no graph stores, with the record that
// rebuild needs to restore the checkpoint.
Result<WrittenFile> WriteExtras(const Checkpoint& checkpoint, const std::set<std::string>& used,
                                const std::vector<std::string>& components,
                                const SourceDigests& digests, const std::string& conversion_id,
                                const std::string& path) {
  SourceRecord record;
  record.source_file = fs::path(checkpoint.path()).filename().string();
  record.source_sha256 = digests.file_sha256;
  record.source_format = checkpoint.format();
  record.source_metadata = checkpoint.metadata();
  record.components = components;
  if (checkpoint.format() == "safetensors") {
    record.source_header = SafetensorsHeaderText(checkpoint.mapped().bytes());
  }
  record.source_bytes = checkpoint.mapped().size();
  for (std::size_t i = 0; i < checkpoint.tensors().size(); ++i) {
    const TensorInfo& t = checkpoint.tensors()[i];
    record.tensors.push_back({t.name, t.dtype, t.shape, digests.tensor_digests[i]});
  }
  LogInfo("writing " + fs::path(path).filename().string() + " with " +
          std::to_string(checkpoint.tensors().size() - used.size()) + " tensors no graph uses");
  return WriteExtrasFile(path, checkpoint, used, record,
                         {{"sdonnx.version", SDONNX_VERSION}, {kConversionIdKey, conversion_id}});
}

// The checks of `options` that need no file.
Status ValidateOptions(const ConvertOptions& options) {
  if (options.opset < kMinOpset || options.opset > kMaxOpset) {
    return Status::Error("opset " + std::to_string(options.opset) + " is not supported; use " +
                         std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset));
  }
  const std::int64_t chunks = options.attention_chunks.value_or(kDefaultAttentionChunks);
  if (chunks < 1 || chunks > kMaxAttentionChunks) {
    return Status::Error("--attention-chunks " + std::to_string(chunks) +
                         " is invalid: use 1 (no chunks) to " +
                         std::to_string(kMaxAttentionChunks) + "; the default is " +
                         std::to_string(kDefaultAttentionChunks));
  }
  if (options.fp16 && options.fp32_weights) {
    return Status::Error("--fp32-weights and --fp16 contradict each other: --fp16 stores every "
                         "weight as float16; give one of them");
  }
  if (options.ort_attention && options.attention_chunks.has_value() && chunks > 1) {
    LogWarning("--attention-chunks " + std::to_string(chunks) +
               " has no effect with --ort-attention, whose flash attention never stores "
               "the scores; the UNet and VAE attention are written unchunked");
  }
  return Status::Ok();
}

// Detects the model in `checkpoint` and checks what convert needs of it.
Result<ModelSpec> DetectForConvert(const Checkpoint& checkpoint, const ConvertOptions& options,
                                   bool ema) {
  Result<ModelSpec> detected =
      DetectModel(checkpoint, options.config_path, options.prediction_type);
  if (!detected.ok() && !ema && checkpoint.HasPrefix("model_ema.diffusion_model") &&
      detected.status().message().find("UNet") != std::string::npos) {
    return Status::Error(detected.status().message() +
                         "; the file also has EMA weights (model_ema.*): `sdonnx convert --ema` "
                         "converts those");
  }
  SDONNX_ASSIGN_OR_RETURN(ModelSpec spec, std::move(detected));
  SDONNX_RETURN_IF_ERROR(CheckUNetHeads(spec).WithContext(options.model_path));
  if (options.static_shape) {
    SDONNX_RETURN_IF_ERROR(ValidateStaticShape(*options.static_shape, DownsampleFactor(spec)));
  }
  spec.ema_unet = ema;
  if (ema) spec.notes.push_back("unet weights: EMA (model_ema.*)");
  WarnAboutPositionIds(checkpoint);
  return spec;
}

Status CheckOutputDirIsFolder(const fs::path& out_dir, const std::string& model_path) {
  std::error_code ec;
  if (fs::equivalent(out_dir, model_path, ec)) {
    return Status::Error("--output-dir " + out_dir.string() +
                         " is the input checkpoint; give a folder for the ONNX files");
  }
  if (fs::exists(out_dir, ec) && !fs::is_directory(out_dir, ec)) {
    return Status::Error("--output-dir " + out_dir.string() +
                         " exists and is not a folder; give a folder for the ONNX files");
  }
  return Status::Ok();
}

// The settings and sources that every component of one run shares.
struct RunContext {
  const ConvertOptions& options;
  const ModelSpec& spec;
  const Checkpoint& checkpoint;
  const ModelWriteOptions& write_options;
  fs::path staging;
  std::string stem;
};

// Builds the graph of `p`, writes it into the staging folder and adds it to
// `report`; `used_keys` gains the checkpoint keys the graph stores.
Status WriteComponent(const RunContext& run, const ComponentPlan& p, ConvertReport* report,
                      std::set<std::string>* used_keys) {
  const std::string file_name = p.component + "_" + run.stem + ".onnx";
  LogInfo("building " + file_name);
  const ComponentSettings settings = SettingsFor(p.component, run.spec, run.options);
  GraphBuilder builder(*p.source, run.options.opset, p.component);
  builder.SetFloat16(settings.float16);
  builder.SetFloat32Weights(settings.float32_weights);
  builder.SetOrtAttention(settings.ort_attention);
  builder.SetAttentionChunks(settings.attention_chunks);
  builder.SetStaticDims(settings.static_dims);
  Status built = p.build(builder).WithContext(
      "building " + p.component + " from " + fs::path(p.source->path()).filename().string());
  if (built.ok() && p.component == "unet") built = CheckAllUNetWeightsUsed(builder, run.spec);
  if (p.component == "unet") built = WithEmaAdvice(run.checkpoint, run.spec, std::move(built));
  SDONNX_RETURN_IF_ERROR(built);
  ModelWriteOptions component_options = run.write_options;
  component_options.metadata.insert(settings.metadata.begin(), settings.metadata.end());
  component_options.metadata["sdonnx.component"] = p.component;
  if (const std::string layout = builder.SelfAttentionLayout(); !layout.empty()) {
    component_options.metadata["sdonnx.self_attention"] = layout;
  }
  if (const std::int64_t channels = builder.full_resolution_channels(); channels > 0) {
    component_options.metadata["sdonnx.full_resolution_channels"] = std::to_string(channels);
  }
  // Weights a float32 graph keeps in the source's float16 or bfloat16, each
  // behind a Cast; generate --widen-at-load folds them at load.
  int cast_weights = 0;
  if (!settings.float16 && !settings.float32_weights) {
    for (const WeightRef& ref : builder.weights()) {
      if (ref.stored != DType::kF16 && ref.stored != DType::kBF16) continue;
      ++cast_weights;
      report->narrow_weight_dtypes.insert(ref.stored == DType::kF16 ? "float16" : "bfloat16");
    }
    if (cast_weights > 0) {
      ++report->float32_graphs_with_narrow_weights;
      report->cast_weights[p.component] = cast_weights;
    }
  }
  component_options.metadata["sdonnx.cast_weights"] = std::to_string(cast_weights);
  WeightConversion conversion;
  component_options.conversion = &conversion;
  if (p.source != &run.checkpoint) {
    component_options.metadata["sdonnx.weights_file"] = fs::path(p.source->path()).filename();
  }
  SDONNX_ASSIGN_OR_RETURN(
      std::vector<WrittenFile> files,
      WriteModel(builder, *p.source, run.staging.string(), file_name, component_options));
  LogConversion(file_name, conversion, settings.float32_weights);
  report->components.push_back(
      {p.component, std::move(files), settings.weight_precision, conversion});
  if (p.source == &run.checkpoint) {
    for (const WeightRef& ref : builder.weights()) used_keys->insert(ref.key);
  }
  return Status::Ok();
}

}  // namespace

Result<ConvertReport> ConvertCheckpoint(const ConvertOptions& options) {
  SDONNX_RETURN_IF_ERROR(ValidateOptions(options));
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                          Checkpoint::Open(options.model_path));
  for (const std::string& warning : checkpoint->warnings()) LogWarning(warning);
  SDONNX_ASSIGN_OR_RETURN(const bool ema, ChooseUNetWeights(*checkpoint, options.ema));
  checkpoint->UseEmaUNet(ema);

  ConvertReport report;
  SDONNX_ASSIGN_OR_RETURN(report.spec, DetectForConvert(*checkpoint, options, ema));
  ModelSpec& spec = report.spec;
  std::unique_ptr<Checkpoint> vae_file;
  if (options.vae_path) {
    SDONNX_ASSIGN_OR_RETURN(vae_file, OpenSeparateVae(*options.vae_path, &spec));
  }
  SDONNX_RETURN_IF_ERROR(CheckShapesBeforeConvert(*checkpoint, vae_file.get(), spec));
  const std::vector<ComponentPlan> plan =
      PlanComponents(spec, *checkpoint, vae_file ? *vae_file : *checkpoint);

  const fs::path out_dir(options.output_dir);
  SDONNX_RETURN_IF_ERROR(CheckOutputDirIsFolder(out_dir, options.model_path));
  // The folders this run creates (the output folder and its missing
  // parents) are removed again if the run fails or is interrupted and
  // leaves them empty.
  Result<CreatedFolders> created = CreatedFolders::Create(out_dir);
  if (!created.ok()) {
    return Status::Error("--output-dir: " + created.status().message());
  }
  CreatedFolders created_folders = std::move(created).value();
  const std::string stem = fs::path(options.model_path).stem().string();
  SDONNX_RETURN_IF_ERROR(CheckOutputs(out_dir, plan, stem, options.overwrite));

  // A hidden folder inside the output folder keeps the files until all of
  // them are complete.
  SDONNX_ASSIGN_OR_RETURN(LockedTemporaryFolder staging,
                          LockedTemporaryFolder::Create(out_dir, kStagingPrefix, kStagingLockName));

  // Hashing the source runs beside the writing of the models. The first
  // model needs the file hash only when its header is serialized, and the
  // extras file needs the tensor digests once every model is written.
  std::shared_future<SourceDigests> digests =
      std::async(std::launch::async, [&checkpoint] { return HashSource(*checkpoint); }).share();
  // Joins the hashing on every return path: it reads the memory map.
  struct JoinOnExit {
    std::shared_future<SourceDigests>& future;
    ~JoinOnExit() { future.wait(); }
  } join_on_exit{digests};

  if (spec.needs_prediction_probe()) {
    SDONNX_RETURN_IF_ERROR(ProbePredictionType(*checkpoint, staging.path().string(), &spec));
  }

  ModelWriteOptions write_options;
  write_options.external_data = options.external_data;
  write_options.producer_version = SDONNX_VERSION;
  write_options.metadata = CommonMetadata(spec, options.model_path);
  std::vector<std::string> components;
  for (const ComponentPlan& p : plan) components.push_back(p.component);
  components.push_back(kExtrasComponent);
  write_options.metadata["sdonnx.components"] = JoinComponents(components);
  // Every file of this run names the id; readers reject a folder or an
  // .onnx/.data pair whose files name different ones.
  const std::string settings_text = RunSettings(options, write_options.metadata);
  write_options.conversion_id = [digests, settings_text] {
    return ConversionId(digests.get().file_sha256, settings_text);
  };
  write_options.late_metadata = [digests]() -> std::map<std::string, std::string> {
    return {{"sdonnx.source_sha256", digests.get().file_sha256}};
  };
  std::set<std::string> used_keys;  // Source tensors that some graph stores.
  const RunContext run{options, spec, *checkpoint, write_options, staging.path(), stem};
  for (const ComponentPlan& p : plan) {
    SDONNX_RETURN_IF_ERROR(WriteComponent(run, p, &report, &used_keys));
  }

  report.source_sha256 = digests.get().file_sha256;
  report.conversion_id = write_options.conversion_id();
  SDONNX_ASSIGN_OR_RETURN(const WrittenFile extras,
                          WriteExtras(*checkpoint, used_keys, components, digests.get(),
                                      report.conversion_id,
                                      (staging.path() / ExtrasFileName(stem)).string()));
  report.extras = extras;

  // Every file is complete and checked; move them into place.
  SDONNX_RETURN_IF_ERROR(MoveIntoPlace(out_dir, options.overwrite, &report));
  created_folders.Keep();
  return report;
}

}  // namespace sdonnx
