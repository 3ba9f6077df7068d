#include "inspect/onnx_inspect.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "formats/conversion_id.h"
#include "formats/dtype.h"
#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "generate/metadata_values.h"
#include "inspect/onnx_family.h"
#include "rebuild/source_record.h"
#include "runtime/session_cache.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

std::string OnnxDTypeName(int type) {
  switch (type) {
    case onnx::TensorProto_DataType_FLOAT: return "F32";
    case onnx::TensorProto_DataType_FLOAT16: return "F16";
    case onnx::TensorProto_DataType_BFLOAT16: return "BF16";
    case onnx::TensorProto_DataType_DOUBLE: return "F64";
    case onnx::TensorProto_DataType_INT64: return "I64";
    case onnx::TensorProto_DataType_INT32: return "I32";
    case onnx::TensorProto_DataType_INT16: return "I16";
    case onnx::TensorProto_DataType_INT8: return "I8";
    case onnx::TensorProto_DataType_UINT8: return "U8";
    case onnx::TensorProto_DataType_BOOL: return "BOOL";
    default:
      return onnx::TensorProto_DataType_IsValid(type)
                 ? onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(type))
                 : "type " + std::to_string(type);
  }
}

OnnxValueSummary ValueSummary(const onnx::ValueInfoProto& value) {
  OnnxValueSummary out;
  out.name = value.name();
  if (!value.type().has_tensor_type()) {
    out.dtype = "not a tensor";
    return out;
  }
  const onnx::TypeProto_Tensor& tensor = value.type().tensor_type();
  out.dtype = OnnxDTypeName(tensor.elem_type());
  for (const onnx::TensorShapeProto_Dimension& dim : tensor.shape().dim()) {
    if (dim.has_dim_value()) {
      out.shape.push_back(std::to_string(dim.dim_value()));
    } else if (dim.has_dim_param()) {
      out.shape.push_back(dim.dim_param());
    } else {
      out.shape.push_back("?");
    }
  }
  return out;
}

// The component from the file name sdonnx writes (unet_STEM.onnx, ...) or
// from the folder of diffusers' layout (unet/model.onnx, ...).
std::string ComponentFromName(const fs::path& path) {
  const std::string stem = path.stem().string();
  const std::string folder = path.parent_path().filename().string();
  for (const char* prefix : {"unet", "vae_encoder", "vae_decoder", "clip_text_2", "clip_text"}) {
    if (stem.starts_with(std::string(prefix) + "_") || stem == prefix) return prefix;
  }
  if (folder == "unet" || folder == "vae_encoder" || folder == "vae_decoder") return folder;
  if (folder == "text_encoder") return "clip_text";
  if (folder == "text_encoder_2") return "clip_text_2";
  return "unknown";
}

// The byte count that dims and dtype give, or 0 when a dimension is
// negative, the dtype unknown or the product overflows.
std::uint64_t InitializerBytes(const onnx::TensorProto& t) {
  const std::optional<DType> dtype = DTypeFromOnnx(t.data_type());
  std::uint64_t bytes = dtype ? DTypeSize(*dtype) : 0;
  for (std::int64_t dim : t.dims()) {
    if (dim < 0 || __builtin_mul_overflow(bytes, static_cast<std::uint64_t>(dim), &bytes)) {
      return 0;
    }
  }
  return bytes;
}

std::optional<std::uint64_t> ParseUnsigned(const std::string& text) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// The end of the initializer's bytes in its external data file: offset plus
// length, the length defaulting to what dims and dtype need.
std::optional<std::uint64_t> ExternalEnd(const onnx::TensorProto& t) {
  std::optional<std::uint64_t> offset = 0;
  std::optional<std::uint64_t> length = InitializerBytes(t);
  for (const onnx::StringStringEntryProto& entry : t.external_data()) {
    if (entry.key() == "offset") offset = ParseUnsigned(entry.value());
    if (entry.key() == "length") length = ParseUnsigned(entry.value());
  }
  std::uint64_t end = 0;
  if (!offset || !length || __builtin_add_overflow(*offset, *length, &end)) return std::nullopt;
  return end;
}

// The first component of `relative`, below `dir`, that is a symlink.
std::optional<fs::path> FirstSymlink(const fs::path& dir, const fs::path& relative) {
  fs::path current = dir.empty() ? fs::path(".") : dir;
  for (const fs::path& part : relative) {
    current /= part;
    std::error_code ec;
    const fs::file_status status = fs::symlink_status(current, ec);
    if (ec || !fs::exists(status)) return std::nullopt;
    if (fs::is_symlink(status)) return current;
  }
  return std::nullopt;
}

// Records a problem when the data file at `data` belongs to another
// conversion than the model (see formats/conversion_id.h).
void CheckDataFileConversion(const fs::path& model_path, const fs::path& data,
                             std::uint64_t size, OnnxFileSummary* out) {
  std::vector<std::uint8_t> head(static_cast<std::size_t>(std::min(size, kDataHeaderBytes)));
  std::ifstream in(data, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()))) {
    out->problems.push_back(data.string() + ": cannot be read");
    return;
  }
  const Status matches = CheckDataFileMatches(model_path.string(), out->metadata, data.string(),
                                              head, size);
  if (!matches.ok()) out->problems.push_back(matches.message());
}

void CheckExternalFiles(const std::map<std::string, std::uint64_t>& needed,
                        const fs::path& model_path, OnnxFileSummary* out) {
  for (const auto& [location, end] : needed) {
    out->external_data_files.push_back(location);
    const fs::path relative(location);
    const bool escapes = relative.is_absolute() ||
                         std::any_of(relative.begin(), relative.end(),
                                     [](const fs::path& part) { return part == ".."; });
    if (escapes) {
      out->unsafe_external_data_files.push_back(location);
      continue;
    }
    const fs::path data = model_path.parent_path() / location;
    if (const std::optional<fs::path> link = FirstSymlink(model_path.parent_path(), relative)) {
      out->symlinked_external_data_files.push_back(location);
      out->warnings.push_back("external data location '" + location +
                              "' passes through the symlink " + link->string() +
                              "; extract, rebuild and ONNX Runtime reject linked data files, so "
                              "replace the link with a copy of the file");
    }
    std::error_code ec;
    if (!fs::is_regular_file(data, ec)) {
      out->missing_external_data_files.push_back(location);
      continue;
    }
    const std::uint64_t size = fs::file_size(data, ec);
    if (ec) continue;
    if (size >= end) {
      // A truncated file gets the warning below instead.
      CheckDataFileConversion(model_path, data, size, out);
      continue;
    }
    out->truncated_external_data_files.push_back({location, end, size});
    out->warnings.push_back("external data file " + data.string() + " is truncated: the "
                            "initializers need " + std::to_string(end) + " bytes, but it has " +
                            std::to_string(size) + "; copy or download it again");
  }
}

void ReadInitializers(const onnx::GraphProto& graph, const fs::path& model_path,
                      OnnxFileSummary* out) {
  // The end of the last initializer in each external data file.
  std::map<std::string, std::uint64_t> needed;
  for (const onnx::TensorProto& t : graph.initializer()) {
    ++out->initializers;
    std::int64_t elements = 1;
    for (std::int64_t dim : t.dims()) {
      if (__builtin_mul_overflow(elements, dim, &elements)) elements = 0;
    }
    out->parameters += elements;
    ++out->dtypes[OnnxDTypeName(t.data_type())];
    if (t.data_location() != onnx::TensorProto_DataLocation_EXTERNAL) continue;
    for (const onnx::StringStringEntryProto& entry : t.external_data()) {
      if (entry.key() != "location") continue;
      // An unreadable offset or length counts as 0 here; loaders reject it.
      const std::uint64_t end = ExternalEnd(t).value_or(0);
      needed[entry.value()] = std::max(needed[entry.value()], end);
    }
  }
  CheckExternalFiles(needed, model_path, out);
}

// The family of a folder without sdonnx metadata, from its UNet's shapes or
// from which text encoders it has.
void InferFolderFamily(const std::set<std::string>& present, const OnnxFileSummary* unet,
                       OnnxFolderSummary* out) {
  const bool text_1 = present.contains("clip_text");
  const bool text_2 = present.contains("clip_text_2");
  if (unet != nullptr) {
    out->family = unet->family;
    out->family_basis = unet->family_basis;
    // The layout alone does not tell the SDXL refiner from the base model.
    if (out->family == "sdxl" && unet->family_basis.starts_with("UNet layout") && text_2 &&
        !text_1) {
      out->family = "sdxl-refiner";
      out->family_basis += "; only the second text encoder is present, as in the SDXL refiner";
    }
  } else if (text_2) {
    out->family = text_1 ? "sdxl" : "sdxl-refiner";
    out->family_basis = text_1 ? "both text encoders are present"
                               : "only the second text encoder is present";
  }
}

}  // namespace

Result<OnnxFileSummary> InspectOnnxFile(const std::string& path) {
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->size() > static_cast<std::size_t>(INT_MAX)) {
    return Status::Error(path + ": " + std::to_string(file->size()) +
                         " bytes is past the 2 GiB limit of a protobuf ONNX file; the weights "
                         "of larger models belong in external data files");
  }
  // NOTE: the parse copies the weights stored inside the file, so memory use
  // is about the file size (at most 2 GiB). External data is never read.
  onnx::ModelProto model;
  if (!model.ParseFromArray(file->bytes().data(), static_cast<int>(file->size()))) {
    return Status::Error(path + ": not a valid ONNX file: the protobuf ModelProto does not "
                         "parse; the file is truncated or damaged");
  }
  OnnxFileSummary out;
  out.path = path;
  out.file_bytes = file->size();
  out.ir_version = model.ir_version();
  out.producer = model.producer_name() +
                 (model.producer_version().empty() ? "" : " " + model.producer_version());
  for (const onnx::OperatorSetIdProto& opset : model.opset_import()) {
    out.opsets[opset.domain()] = opset.version();
  }
  for (const onnx::StringStringEntryProto& entry : model.metadata_props()) {
    out.metadata[entry.key()] = entry.value();
  }
  const onnx::GraphProto& graph = model.graph();
  std::set<std::string> initializer_names;
  for (const onnx::TensorProto& t : graph.initializer()) initializer_names.insert(t.name());
  for (const onnx::ValueInfoProto& input : graph.input()) {
    // Files from IR version 3 list initializers as inputs too.
    if (!initializer_names.contains(input.name())) out.inputs.push_back(ValueSummary(input));
  }
  for (const onnx::ValueInfoProto& output : graph.output()) {
    out.outputs.push_back(ValueSummary(output));
  }
  out.nodes = static_cast<std::size_t>(graph.node_size());
  ReadInitializers(graph, fs::path(path), &out);

  auto component = out.metadata.find("sdonnx.component");
  out.made_by_sdonnx = out.metadata.contains("sdonnx.version");
  if (component != out.metadata.end()) {
    out.component = component->second;
    out.component_basis = "metadata sdonnx.component";
  } else {
    out.component = ComponentFromName(fs::path(path));
    out.component_basis = out.component == "unknown" ? "no metadata, unrecognised name"
                                                     : "file or folder name";
  }
  if (auto family = out.metadata.find("sdonnx.family"); family != out.metadata.end()) {
    out.family = family->second;
    out.family_basis = "metadata sdonnx.family";
  } else if (out.component == "unet") {
    const UNetFamilyHint hint = InferUNetFamily(graph);
    out.family = hint.family;
    out.family_basis = hint.basis;
  }
  return out;
}

// Adds the extras file of the export in `dir`, when there is one, to the
// file names by conversion id. Its id is in its safetensors metadata.
void AddExtrasConversion(const std::string& dir, const std::vector<OnnxFileSummary>& files,
                         std::map<std::string, std::vector<std::string>>* conversions) {
  std::set<std::string> names;
  for (const OnnxFileSummary& file : files) {
    if (!file.made_by_sdonnx) continue;
    std::string stem = fs::path(file.path).stem().string();
    if (stem.starts_with(file.component + "_")) stem = stem.substr(file.component.size() + 1);
    names.insert(ExtrasFileName(stem));
  }
  for (const std::string& name : names) {
    std::error_code ec;
    const fs::path extras = fs::path(dir) / name;
    if (!fs::is_regular_file(extras, ec)) continue;
    Result<std::unique_ptr<SafetensorsFile>> opened = SafetensorsFile::Open(extras.string());
    if (!opened.ok()) continue;  // DescribeRebuild and rebuild report a damaged extras file.
    const auto id = (*opened)->metadata().find(kConversionIdKey);
    (*conversions)[id == (*opened)->metadata().end() ? std::string() : id->second].push_back(
        name);
  }
}

// Whether `sdonnx rebuild` can restore the checkpoint that an sdonnx export
// came from: it needs the extras file, every component the export listed
// (sdonnx.components), and weights kept at the source's precision.
// `mixed` is why the files do not form one export (different checkpoints or
// conversions), or empty.
void DescribeRebuild(const std::string& path, const std::string& mixed, OnnxFolderSummary* out) {
  const OnnxFileSummary* first = nullptr;
  for (const OnnxFileSummary& file : out->files) {
    if (file.made_by_sdonnx && file.metadata.contains("sdonnx.components")) first = &file;
  }
  if (first == nullptr) return;

  const std::string& component = first->component;
  std::string stem = fs::path(first->path).stem().string();
  if (stem.starts_with(component + "_")) stem = stem.substr(component.size() + 1);
  const std::string extras = ExtrasFileName(stem);
  std::error_code ec;
  if (fs::is_regular_file(fs::path(path) / extras, ec)) out->extras_file = extras;

  std::vector<std::string> missing;
  for (const std::string& c : SplitComponents(first->metadata.at("sdonnx.components"))) {
    if (c == kExtrasComponent) continue;
    const bool found = std::any_of(out->files.begin(), out->files.end(),
                                   [&c](const OnnxFileSummary& f) { return f.component == c; });
    if (!found) missing.push_back(c);
  }

  std::string fp16;
  for (const OnnxFileSummary& file : out->files) {
    const auto precision = file.metadata.find("sdonnx.weight_precision");
    if (precision != file.metadata.end() && precision->second != "source" &&
        precision->second != "fp32" && fp16.empty()) {
      fp16 = fs::path(file.path).filename().string() + " has " + precision->second + " weights";
    }
  }

  std::string damaged;
  for (const OnnxFileSummary& file : out->files) {
    const std::vector<std::string> damage = FileDamage(file);
    if (!damage.empty()) {
      damaged = damage.front();
      break;
    }
  }
  if (!mixed.empty()) {
    out->rebuild = "cannot restore the checkpoint: " + mixed +
                   (out->several_checkpoints
                        ? "; move each checkpoint's export into a folder of its own and rebuild "
                          "from there"
                        : "; convert the checkpoint again into an empty folder");
  } else if (!damaged.empty()) {
    out->rebuild = "cannot restore the checkpoint: " + damaged +
                   "; convert the checkpoint again into an empty folder";
  } else if (out->extras_file.empty()) {
    out->rebuild = "cannot restore the checkpoint: the extras file " + extras + " is missing";
  } else if (!missing.empty()) {
    out->rebuild = "cannot restore the checkpoint: the export lacks " + JoinComponents(missing) +
                   "; `sdonnx rebuild --allow-partial` writes a partial file";
  } else if (!fp16.empty()) {
    out->rebuild = "cannot restore the checkpoint exactly: " + fp16 +
                   " (the source bytes are lost); convert again without --fp16";
  } else {
    out->rebuild_possible = true;
    out->rebuild = "can restore the checkpoint: sdonnx rebuild " + path + " -o OUT.safetensors";
  }
}

std::vector<std::string> FileDamage(const OnnxFileSummary& file) {
  const std::string name = fs::path(file.path).filename().string();
  std::vector<std::string> damage;
  for (const std::string& problem : file.problems) damage.push_back(name + ": " + problem);
  for (const std::string& data : file.missing_external_data_files) {
    damage.push_back(name + ": its external data file " + data + " is missing");
  }
  for (const TruncatedDataFile& data : file.truncated_external_data_files) {
    damage.push_back(name + ": its external data file " + data.location + " has " +
                     std::to_string(data.actual_bytes) + " bytes, but its initializers end at "
                     "byte " + std::to_string(data.expected_bytes));
  }
  for (const std::string& data : file.unsafe_external_data_files) {
    damage.push_back(name + ": its external data location " + data + " points outside the folder");
  }
  for (const std::string& data : file.symlinked_external_data_files) {
    damage.push_back(name + ": its external data location " + data + " is a symlink");
  }
  return damage;
}

namespace {

// The number in `text`, or -1 when it is not a whole non-negative number.
std::int64_t WholeNumber(const std::string& text) {
  std::int64_t value = -1;
  const auto [stop, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && stop == text.data() + text.size() && value >= 0 ? value : -1;
}

// The channel dimension of input `name` (the first input when empty), or -1.
std::int64_t InputChannels(const OnnxFileSummary& file, const std::string& name) {
  for (const OnnxValueSummary& input : file.inputs) {
    if (!name.empty() && input.name != name) continue;
    return input.shape.size() == 4 ? WholeNumber(input.shape[1]) : -1;
  }
  return -1;
}

// MismatchWithDecoder for the sdonnx UNet and VAE decoder among `files`;
// "" when either is missing or a value does not parse (reported elsewhere).
std::string UNetDecoderMismatch(const std::vector<OnnxFileSummary>& files) {
  const OnnxFileSummary* unet = nullptr;
  const OnnxFileSummary* decoder = nullptr;
  for (const OnnxFileSummary& file : files) {
    if (!file.made_by_sdonnx) continue;
    if (file.component == "unet") unet = &file;
    if (file.component == "vae_decoder") decoder = &file;
  }
  if (unet == nullptr || decoder == nullptr) return "";
  auto value = [&](const std::string& key) {
    const auto it = unet->metadata.find(key);
    return it == unet->metadata.end() ? std::int64_t{-1} : WholeNumber(it->second);
  };
  const std::int64_t latents = value("sdonnx.latent_channels");
  const std::int64_t factor = value("sdonnx.vae_downsample_factor");
  if (latents <= 0 || factor <= 0) return "";
  return MismatchWithDecoder(unet->path, latents, factor, InputChannels(*unet, "sample"),
                             decoder->path, InputChannels(*decoder, ""), decoder->metadata);
}

}  // namespace

Result<OnnxFolderSummary> InspectOnnxFolder(const std::string& path) {
  OnnxFolderSummary out;
  out.path = path;
  std::vector<fs::path> paths;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(path, ec)) {
    if (entry.is_regular_file() && entry.path().extension() == ".onnx") {
      paths.push_back(entry.path());
    } else if (entry.is_directory() && !entry.path().filename().string().starts_with(".") &&
               // A session cache kept inside the export folder is not part of it.
               !IsSessionCacheEntry(entry.path())) {
      for (const fs::directory_entry& inner : fs::directory_iterator(entry.path(), ec)) {
        if (inner.is_regular_file() && inner.path().extension() == ".onnx") {
          paths.push_back(inner.path());
        }
      }
    }
  }
  if (ec) return Status::Error(path + ": cannot list the folder: " + ec.message());
  if (paths.empty()) {
    return Status::Error(path + ": no .onnx files in the folder or in the folders directly "
                         "inside it; pass a checkpoint or a folder that `sdonnx convert` wrote");
  }
  std::sort(paths.begin(), paths.end());
  std::set<std::string> families;
  std::set<std::string> sources;
  std::set<std::string> present;
  // File names by conversion id, "" for sdonnx files without one.
  std::map<std::string, std::vector<std::string>> conversions;
  for (const fs::path& file : paths) {
    Result<OnnxFileSummary> inspected = InspectOnnxFile(file.string());
    if (!inspected.ok()) {
      // One damaged file should not hide what the others hold.
      out.problems.push_back(inspected.status().message());
      continue;
    }
    OnnxFileSummary summary = std::move(inspected).value();
    if (summary.made_by_sdonnx) {
      const auto id = summary.metadata.find(kConversionIdKey);
      conversions[id == summary.metadata.end() ? std::string() : id->second].push_back(
          file.filename().string());
      // Values that generate would reject, so that verify fails where it does.
      for (std::string& problem : InvalidGenerateMetadata(file.string(), summary.metadata)) {
        out.problems.push_back(std::move(problem));
      }
    }
    if (auto f = summary.metadata.find("sdonnx.family"); f != summary.metadata.end()) {
      families.insert(f->second);
    }
    if (auto s = summary.metadata.find("sdonnx.source_sha256"); s != summary.metadata.end()) {
      sources.insert(s->second);
    }
    if (present.contains(summary.component) && summary.component != "unknown") {
      out.warnings.push_back("more than one " + summary.component + " file; one model per "
                             "folder is expected");
    }
    present.insert(summary.component);
    out.files.push_back(std::move(summary));
  }
  if (families.size() > 1) out.warnings.push_back("files of different families in one folder");
  // A checkpoint without a VAE gives a UNet without the VAE's keys; the
  // missing vae_decoder is reported as a missing component instead.
  for (const OnnxFileSummary& file : out.files) {
    if (!file.made_by_sdonnx || file.component != "unet") continue;
    for (std::string& problem :
         MissingUNetMetadata(file.path, file.metadata, present.contains("vae_decoder"))) {
      out.problems.push_back(std::move(problem));
    }
  }
  if (std::string mismatch = UNetDecoderMismatch(out.files); !mismatch.empty()) {
    out.problems.push_back(std::move(mismatch));
  }
  AddExtrasConversion(path, out.files, &conversions);
  std::string mixed;
  if (sources.size() > 1) {
    mixed = "files converted from " + std::to_string(sources.size()) +
            " different checkpoints (sdonnx.source_sha256 differs)";
    out.problems.push_back(mixed + "; keep the export of each checkpoint in its own folder");
    out.several_checkpoints = true;
  } else if (conversions.size() > 1) {
    mixed = "files from " + std::to_string(conversions.size()) +
            " different convert runs (" + DescribeConversions(conversions) + ")";
    out.problems.push_back(mixed + "; they may not fit together, so convert the checkpoint "
                           "again into an empty folder");
  }
  const OnnxFileSummary* unet = nullptr;
  for (const OnnxFileSummary& file : out.files) {
    if (file.component == "unet" && !file.family.empty()) unet = &file;
  }
  if (families.size() == 1) {
    out.family = *families.begin();
    out.family_basis = "metadata sdonnx.family";
  } else if (families.empty()) {
    InferFolderFamily(present, unet, &out);
  }
  std::vector<std::string> pipeline = {"unet", "vae_encoder", "vae_decoder"};
  if (out.family != "sdxl-refiner") pipeline.push_back("clip_text");
  if (out.family == "sdxl" || out.family == "sdxl-refiner") pipeline.push_back("clip_text_2");
  for (const std::string& component : pipeline) {
    (present.contains(component) ? out.present_components : out.missing_components)
        .push_back(component);
  }
  DescribeRebuild(path, mixed, &out);
  return out;
}

nlohmann::json OnnxFileSummaryJson(const OnnxFileSummary& s) {
  using nlohmann::json;
  auto values = [](const std::vector<OnnxValueSummary>& list) {
    json out = json::array();
    for (const OnnxValueSummary& v : list) {
      out.push_back({{"name", v.name}, {"dtype", v.dtype}, {"shape", v.shape}});
    }
    return out;
  };
  json truncated = json::array();
  for (const TruncatedDataFile& t : s.truncated_external_data_files) {
    truncated.push_back({{"location", t.location},
                         {"expected_bytes", t.expected_bytes},
                         {"actual_bytes", t.actual_bytes}});
  }
  return {{"kind", "onnx"},
          {"path", s.path},
          {"file_bytes", s.file_bytes},
          {"component", s.component},
          {"component_basis", s.component_basis},
          {"made_by_sdonnx", s.made_by_sdonnx},
          {"ir_version", s.ir_version},
          {"producer", s.producer},
          {"opsets", s.opsets},
          {"metadata", s.metadata},
          {"inputs", values(s.inputs)},
          {"outputs", values(s.outputs)},
          {"nodes", s.nodes},
          {"initializers", s.initializers},
          {"parameters", s.parameters},
          {"dtypes", s.dtypes},
          {"external_data_files", s.external_data_files},
          {"missing_external_data_files", s.missing_external_data_files},
          {"unsafe_external_data_files", s.unsafe_external_data_files},
          {"symlinked_external_data_files", s.symlinked_external_data_files},
          {"truncated_external_data_files", truncated},
          {"family", s.family.empty() ? json(nullptr) : json(s.family)},
          {"family_basis", s.family_basis},
          {"warnings", s.warnings},
          {"problems", s.problems}};
}

nlohmann::json OnnxFolderSummaryJson(const OnnxFolderSummary& s) {
  using nlohmann::json;
  json files = json::array();
  for (const OnnxFileSummary& f : s.files) files.push_back(OnnxFileSummaryJson(f));
  return {{"kind", "onnx-folder"},
          {"path", s.path},
          {"family", s.family.empty() ? json(nullptr) : json(s.family)},
          {"family_basis", s.family_basis},
          {"present_components", s.present_components},
          {"missing_components", s.missing_components},
          {"warnings", s.warnings},
          {"problems", s.problems},
          {"extras_file", s.extras_file.empty() ? json(nullptr) : json(s.extras_file)},
          {"rebuild_possible", s.rebuild_possible},
          {"rebuild", s.rebuild},
          {"files", files}};
}

}  // namespace sdonnx
