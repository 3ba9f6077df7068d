#include "generate/model_set.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "formats/conversion_id.h"
#include "generate/memory_estimate.h"
#include "generate/metadata_values.h"
#include "util/log.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

Result<std::string> FindStem(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return Status::Error(dir + ": does not exist; pass the output folder of sdonnx convert");
  }
  if (!fs::is_directory(dir, ec)) {
    return Status::Error(dir + ": not a folder; pass the output folder of sdonnx convert");
  }
  std::set<std::string> stems;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("unet_") && name.ends_with(".onnx")) {
      stems.insert(name.substr(5, name.size() - 10));
    }
  }
  if (stems.empty() && fs::is_regular_file(fs::path(dir) / "model.onnx", ec)) {
    const std::string parent = fs::path(dir).lexically_normal().parent_path().string();
    return Status::Error(dir + ": contains model.onnx, one component of a diffusers-layout ONNX "
                         "export, which generate does not read; rebuild a checkpoint from the "
                         "export's top folder (sdonnx rebuild " + (parent.empty() ? "." : parent) +
                         " -o model.safetensors) and convert that");
  }
  if (stems.empty() && fs::is_regular_file(fs::path(dir) / "unet" / "model.onnx", ec)) {
    return Status::Error(dir + ": a diffusers-layout ONNX export (unet/model.onnx, ...), which "
                         "generate does not read; rebuild a checkpoint from it (sdonnx rebuild " +
                         dir + " -o model.safetensors) and convert that");
  }
  if (stems.empty()) {
    return Status::Error(dir + ": no unet_<name>.onnx file; convert a checkpoint into this "
                         "folder first (sdonnx convert MODEL.safetensors " + dir + ")");
  }
  if (stems.size() > 1) {
    std::string list;
    for (const auto& s : stems) list += (list.empty() ? "" : ", ") + s;
    return Status::Error(dir + ": contains several converted models (" + list +
                         "); keep one model per folder");
  }
  return *stems.begin();
}

// The TensorRT profile of the file at `path` for `run`, with the ranges of
// the family recorded in its metadata.
Result<TensorRtProfile> ProfileForFile(const std::string& path, const std::string& component,
                                       const ProfileRequest& run) {
  SDONNX_ASSIGN_OR_RETURN(GraphHeader header, ReadGraphHeader(path));
  const std::string& chunks = header.metadata["sdonnx.attention_chunks"];
  if (!chunks.empty() && chunks != "1") {
    LogWarning(path + ": its attention runs in a Loop over " + chunks + " query chunks "
               "(sdonnx.attention_chunks), the default for ONNX Runtime on CPU. For TensorRT, "
               "convert the checkpoint again with --attention-chunks 1, which writes each "
               "attention as one MatMul-Softmax-MatMul (see docs/tensorrt.md)");
  }
  ProfileRequest request = DefaultProfileRequest(header.metadata["sdonnx.family"]);
  request.width = run.width;
  request.height = run.height;
  request.batch = run.batch;
  request.guidance = run.guidance;
  request.image_guidance = run.image_guidance;
  request.pix2pix = component == "unet" && IsInstructPix2PixUNet(header);
  const std::string& factor = header.metadata["sdonnx.vae_downsample_factor"];
  if (!factor.empty()) {
    SDONNX_ASSIGN_OR_RETURN(request.downsample_factor,
                            MetadataInteger(path, "sdonnx.vae_downsample_factor", header.metadata,
                                            1, kMaxDownsampleFactor));
  }
  SDONNX_ASSIGN_OR_RETURN(auto ranges, ProfileFor(component, header.inputs, request));
  return FormatProfile(ranges);
}

Result<std::unique_ptr<OrtModel>> LoadComponent(const fs::path& dir, const std::string& component,
                                                const std::string& stem,
                                                const SessionOptions& options,
                                                const ProfileRequest& run) {
  const fs::path path = dir / (component + "_" + stem + ".onnx");
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    const std::string purpose = component == "vae_encoder"
                                    ? " is needed for --init-image (img2img, inpainting, "
                                      "instruct-pix2pix)"
                                    : " is needed to generate images";
    return Status::Error(path.string() + ": missing; the " + component + purpose +
                         " (was the checkpoint converted completely?)");
  }
  SessionOptions component_options = options;
  if (options.provider == Provider::kTensorRt) {
    SDONNX_ASSIGN_OR_RETURN(component_options.tensorrt_profile,
                            ProfileForFile(path.string(), component, run));
  }
  return OrtModel::Load(path.string(), component_options);
}

Status ReadFacts(OrtModel& unet, ModelFacts* facts) {
  const auto metadata = unet.Metadata();
  const std::string& path = unet.path();
  auto text = [&](const std::string& key) {
    auto it = metadata.find(key);
    return it == metadata.end() ? std::string() : it->second;
  };
  facts->family = text("sdonnx.family");
  if (facts->family.empty()) {
    return Status::Error(path + ": has no sdonnx metadata (sdonnx.family); generate needs files "
                         "written by sdonnx convert");
  }
  if (const auto missing = MissingUNetMetadata(path, metadata, /*with_vae=*/true);
      !missing.empty()) {
    return Status::Error(missing.front());
  }
  facts->variant = text("sdonnx.variant");
  SDONNX_ASSIGN_OR_RETURN(facts->prediction, MetadataPredictionType(path, metadata));
  SDONNX_ASSIGN_OR_RETURN(
      facts->scaling_factor,
      MetadataPositiveFloat(path, "sdonnx.vae_scaling_factor", metadata, kMaxScalingFactor));
  SDONNX_ASSIGN_OR_RETURN(
      facts->downsample_factor,
      MetadataInteger(path, "sdonnx.vae_downsample_factor", metadata, 1, kMaxDownsampleFactor));
  SDONNX_ASSIGN_OR_RETURN(facts->latent_channels, MetadataInteger(path, "sdonnx.latent_channels",
                                                                  metadata, 1, kMaxLatentChannels));
  facts->source_sha256 = text("sdonnx.source_sha256");
  if (!text("sdonnx.text_context_output").empty()) {
    facts->text_context_output = text("sdonnx.text_context_output");
  }
  if (metadata.contains("sdonnx.text_pad_id")) {
    SDONNX_ASSIGN_OR_RETURN(const std::int64_t pad,
                            MetadataInteger(path, "sdonnx.text_pad_id", metadata, 0, kMaxTokenId));
    facts->text_pad_id = static_cast<std::int32_t>(pad);
  }
  if (!text("sdonnx.text_2_context_output").empty()) {
    facts->text_2_context_output = text("sdonnx.text_2_context_output");
    SDONNX_ASSIGN_OR_RETURN(const std::int64_t pad, MetadataInteger(path, "sdonnx.text_2_pad_id",
                                                                    metadata, 0, kMaxTokenId));
    facts->text_2_pad_id = static_cast<std::int32_t>(pad);
  }
  if (metadata.contains("sdonnx.static_shape")) {
    SDONNX_ASSIGN_OR_RETURN(const ImageSize size,
                            MetadataImageSize(path, "sdonnx.static_shape", metadata));
    facts->static_width = size.width;
    facts->static_height = size.height;
    SDONNX_ASSIGN_OR_RETURN(facts->static_batch, MetadataInteger(path, "sdonnx.static_batch",
                                                                 metadata, 1, kMaxStaticBatch));
  }
  const auto inputs = unet.InputNames();
  if (std::find(inputs.begin(), inputs.end(), "time_ids") != inputs.end()) {
    SDONNX_ASSIGN_OR_RETURN(auto embeds, unet.InputShape("text_embeds"));
    SDONNX_ASSIGN_OR_RETURN(auto time_ids, unet.InputShape("time_ids"));
    if (embeds.size() != 2 || time_ids.size() != 2 || embeds[1] <= 0 || time_ids[1] <= 0) {
      return Status::Error(path + ": inputs text_embeds and time_ids should be [batch, N]");
    }
    facts->text_embed_dim = embeds[1];
    facts->num_time_ids = time_ids[1];
  }
  SDONNX_ASSIGN_OR_RETURN(auto sample_shape, unet.InputShape("sample"));
  if (sample_shape.size() != 4 || sample_shape[1] <= 0) {
    return Status::Error(path + ": input 'sample' should be [batch, channels, height, width] "
                         "with a fixed channel count");
  }
  facts->unet_in_channels = sample_shape[1];
  if (facts->static_batch > 0) facts->static_unet_rows = sample_shape[0];
  return Status::Ok();
}

// Checks that the files generate is about to load name the same
// sdonnx.conversion_id, or that none does (exports of older sdonnx
// versions). A mix means that the folder contains files of different
// convert runs, such as after a --force overwrite that was killed part way.
// Only the headers are read, so a mixed folder is refused before the
// minutes a full load can take. A file whose header cannot be read is
// skipped here; loading it reports why.
Status CheckSameConversion(const fs::path& dir, const std::string& stem, bool need_encoder) {
  const auto unet = ReadGraphHeader((dir / ("unet_" + stem + ".onnx")).string());
  if (!unet.ok()) return Status::Ok();
  const std::string family = unet->metadata.count("sdonnx.family") > 0
                                 ? unet->metadata.at("sdonnx.family")
                                 : std::string();
  std::vector<std::string> components = {"unet", "vae_decoder"};
  if (family != "sdxl-refiner") components.push_back("clip_text");
  if (family.starts_with("sdxl")) components.push_back("clip_text_2");
  if (need_encoder) components.push_back("vae_encoder");
  std::map<std::string, std::vector<std::string>> files_by_id;  // "" for no id
  for (const std::string& component : components) {
    const std::string name = component + "_" + stem + ".onnx";
    std::error_code ec;
    if (!fs::is_regular_file(dir / name, ec)) continue;
    const auto header = ReadGraphHeader((dir / name).string());
    if (!header.ok()) continue;
    const auto id = header->metadata.find(kConversionIdKey);
    files_by_id[id == header->metadata.end() ? std::string() : id->second].push_back(name);
  }
  if (files_by_id.size() <= 1) return Status::Ok();
  return Status::Error(dir.string() + ": the files come from different convert runs (" +
                       DescribeConversions(files_by_id) +
                       "), so they may not fit together; convert the checkpoint again with "
                       "--force");
}

// Warns that --widen-at-load has no effect when no file of the export keeps
// float16 or bfloat16 weights behind a Cast.
void WarnWhenNothingToWiden(const fs::path& dir, const std::string& stem) {
  for (const char* component : {"unet", "clip_text", "clip_text_2", "vae_decoder", "vae_encoder"}) {
    const fs::path path = dir / (std::string(component) + "_" + stem + ".onnx");
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) continue;
    const Result<GraphHeader> header = ReadGraphHeader(path.string());
    if (!header.ok()) return;  // Loading reports it.
    const auto count = header->metadata.find("sdonnx.cast_weights");
    // Files of older versions lack the count, so no warning is given.
    if (count == header->metadata.end()) return;
    const std::string& text = count->second;
    if (text.empty() || text.size() > 18 ||
        text.find_first_not_of("0123456789") != std::string::npos) {
      LogWarning(path.string() + ": metadata 'sdonnx.cast_weights' is '" + text +
                 "', expected a count of weights; whether --widen-at-load has an effect on " +
                 "this export is unknown (convert it again to repair the file)");
      return;
    }
    if (text.find_first_not_of('0') != std::string::npos) return;
  }
  LogWarning("--widen-at-load has no effect on " + dir.string() +
             ": no model there keeps float16 or bfloat16 weights behind a Cast (it was "
             "converted from float32 weights, or with --fp16 or --fp32-weights)");
}

// `run` completed from the UNet's header: whether it is instruct-pix2pix
// (more rows per image) and the VAE's downsample factor.
Result<ProfileRequest> WithFileFacts(const fs::path& dir, const std::string& stem,
                                     ProfileRequest run) {
  const std::string path = (dir / ("unet_" + stem + ".onnx")).string();
  const auto header = ReadGraphHeader(path);
  if (!header.ok()) return run;  // Loading reports it.
  run.pix2pix = IsInstructPix2PixUNet(*header);
  if (header->metadata.contains("sdonnx.vae_downsample_factor")) {
    SDONNX_ASSIGN_OR_RETURN(run.downsample_factor,
                            MetadataInteger(path, "sdonnx.vae_downsample_factor", header->metadata,
                                            1, kMaxDownsampleFactor));
  }
  return run;
}

}  // namespace

Status CheckStaticShape(const ModelFacts& facts, std::int64_t width, std::int64_t height,
                        std::int64_t batch, std::int64_t unet_rows) {
  if (facts.static_batch == 0) return Status::Ok();
  const std::string fixed =
      "the model was converted with --static-shape " + std::to_string(facts.static_width) + "x" +
      std::to_string(facts.static_height) + " --batch-size " + std::to_string(facts.static_batch);
  if (width != facts.static_width || height != facts.static_height || batch != facts.static_batch) {
    return Status::Error(fixed + "; pass --width " + std::to_string(facts.static_width) +
                         " --height " + std::to_string(facts.static_height) + " --batch-size " +
                         std::to_string(facts.static_batch) +
                         ", or convert again without --static-shape");
  }
  if (facts.static_unet_rows > 0 && unet_rows != facts.static_unet_rows) {
    return Status::Error(fixed + ", so its UNet takes " + std::to_string(facts.static_unet_rows) +
                         " rows per step (negative and positive prompt), but this run needs " +
                         std::to_string(unet_rows) + "; use a --cfg-scale other than 1");
  }
  return Status::Ok();
}

// Checks the UNet's metadata against the loaded VAE decoder
// (MismatchWithDecoder).
Status CheckAgainstDecoder(const ModelFacts& facts, const std::string& unet_path,
                           OrtModel& decoder) {
  const std::vector<std::string> names = decoder.InputNames();
  if (names.empty()) return Status::Error(decoder.path() + ": has no inputs");
  SDONNX_ASSIGN_OR_RETURN(const std::vector<std::int64_t> shape, decoder.InputShape(names.front()));
  const std::int64_t channels = shape.size() == 4 ? shape[1] : -1;
  const std::string mismatch =
      MismatchWithDecoder(unet_path, facts.latent_channels, facts.downsample_factor,
                          facts.unet_in_channels, decoder.path(), channels, decoder.Metadata());
  return mismatch.empty() ? Status::Ok() : Status::Error(mismatch);
}

std::pair<std::size_t, std::uint64_t> ModelSet::CacheEntriesRemoved() const {
  std::pair<std::size_t, std::uint64_t> removed{0, 0};
  for (const auto* model : {&unet_, &text_, &text_2_, &decoder_, &encoder_}) {
    if (!*model) continue;
    removed.first += (*model)->cache_entries_removed();
    removed.second += (*model)->cache_bytes_freed();
  }
  return removed;
}

std::vector<std::string> ModelSet::CacheBuilt() const {
  std::vector<std::string> names;
  for (const auto* model : {&unet_, &text_, &text_2_, &decoder_, &encoder_}) {
    if (*model && (*model)->cache_built()) {
      names.push_back(fs::path((*model)->path()).filename().string());
    }
  }
  return names;
}

Result<std::unique_ptr<ModelSet>> ModelSet::Load(const std::string& dir, bool need_encoder,
                                                 const SessionOptions& options,
                                                 const ProfileRequest& run) {
  auto set = std::unique_ptr<ModelSet>(new ModelSet());
  SDONNX_ASSIGN_OR_RETURN(set->facts_.stem, FindStem(dir));
  const std::string& stem = set->facts_.stem;
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / ("vae_decoder_" + stem + ".onnx"), ec)) {
    return Status::Error(dir + ": has no vae_decoder_" + stem + ".onnx; the checkpoint had no "
                         "VAE, so convert it again with --vae FILE");
  }
  SDONNX_RETURN_IF_ERROR(CheckSameConversion(dir, stem, need_encoder));
  if (options.widen_weights_at_load) WarnWhenNothingToWiden(dir, stem);
  SDONNX_ASSIGN_OR_RETURN(const ProfileRequest file_run, WithFileFacts(dir, stem, run));
  SDONNX_RETURN_IF_ERROR(CheckRunMemory(dir, stem, need_encoder, file_run, ProcessMemoryLimit()));
  SDONNX_ASSIGN_OR_RETURN(set->unet_, LoadComponent(dir, "unet", stem, options, run));
  SDONNX_RETURN_IF_ERROR(ReadFacts(*set->unet_, &set->facts_));
  if (set->facts_.family != "sdxl-refiner") {
    SDONNX_ASSIGN_OR_RETURN(set->text_, LoadComponent(dir, "clip_text", stem, options, run));
  }
  if (set->facts_.family.starts_with("sdxl")) {
    SDONNX_ASSIGN_OR_RETURN(set->text_2_, LoadComponent(dir, "clip_text_2", stem, options, run));
  }
  SDONNX_ASSIGN_OR_RETURN(set->decoder_, LoadComponent(dir, "vae_decoder", stem, options, run));
  SDONNX_RETURN_IF_ERROR(CheckAgainstDecoder(set->facts_, set->unet_->path(), *set->decoder_));
  if (need_encoder) {
    SDONNX_ASSIGN_OR_RETURN(set->encoder_, LoadComponent(dir, "vae_encoder", stem, options, run));
  }
  return set;
}

}  // namespace sdonnx
