#include "rebuild/rebuild.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "formats/dtype_convert.h"
#include "formats/onnx_file.h"
#include "formats/safetensors.h"
#include "formats/mapped_file.h"
#include "rebuild/foreign_keys.h"
#include "rebuild/source_record.h"
#include "util/atomic_file.h"
#include "util/log.h"
#include "util/temporaries.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

struct ExportSet {
  std::vector<std::unique_ptr<OnnxFile>> models;
  std::unique_ptr<SafetensorsFile> extras;
  SourceRecord record;
};

// The bytes of one source tensor as an input stores them.
struct TensorSource {
  std::span<const std::uint8_t> data;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::size_t component = 0;  // Index into RebuildReport::components.
  // The file that contains the bytes (an .onnx file, its external data file or
  // the extras file) and where they begin in it.
  std::string file;
  std::uint64_t offset = 0;
  // Drops the pages of a memory-mapped source once they are read; empty
  // for bytes in memory.
  std::function<void()> release;
};

// The verified tensors in source order, and for each the release of its
// source pages.
struct VerifiedTensors {
  std::vector<TensorToWrite> tensors;
  std::vector<std::function<void()>> releases;
};

std::string ShapeText(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += (i ? ", " : "") + std::to_string(shape[i]);
  }
  return text + "]";
}

// For a folder without .onnx files: the folders directly inside it that
// contain an extras file, as a hint such as " (found one in DIR/a)".
std::string ExportsInside(const std::string& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory(ec) || entry.path().filename().string().starts_with(".")) continue;
    for (const auto& inner : fs::directory_iterator(entry.path(), ec)) {
      const std::string name = inner.path().filename().string();
      if (name.starts_with(std::string(kExtrasComponent) + "_") && name.ends_with(".safetensors")) {
        found.push_back(entry.path().string());
        break;
      }
    }
  }
  if (found.empty()) return "";
  std::sort(found.begin(), found.end());
  std::string text = found.size() == 1 ? " (found one in " : " (found exports in ";
  for (std::size_t i = 0; i < found.size(); ++i) text += (i ? ", " : "") + found[i];
  return text + ")";
}

// The export's files: a folder's .onnx and extras_*.safetensors files, or
// the files given.
Result<std::vector<std::string>> ListExportFiles(const std::vector<std::string>& inputs) {
  if (inputs.empty()) return Status::Error("no input: give a folder or the export's files");
  std::error_code ec;
  if (inputs.size() == 1 && fs::is_directory(inputs.front(), ec)) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(inputs.front(), ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(".") || !entry.is_regular_file()) continue;
      if (name.ends_with(".onnx") ||
          (name.starts_with(std::string(kExtrasComponent) + "_") &&
           name.ends_with(".safetensors"))) {
        files.push_back(entry.path().string());
      }
    }
    if (ec) return Status::Error(inputs.front() + ": cannot list the folder: " + ec.message());
    std::sort(files.begin(), files.end());
    if (files.empty()) {
      return Status::Error(inputs.front() + ": contains no .onnx files; give the folder that "
                           "`sdonnx convert` wrote" + ExportsInside(inputs.front()));
    }
    return files;
  }
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (fs::equivalent(inputs[j], inputs[i], ec)) {
        return Status::Error(inputs[i] + ": given twice (also as " + inputs[j] +
                             "); give the export's folder, or each of its files, once");
      }
    }
  }
  for (const std::string& input : inputs) {
    if (fs::is_directory(input, ec)) {
      return Status::Error(input + ": is a folder given with other inputs; give either the "
                           "export's folder alone or its .onnx and extras_*.safetensors files");
    }
    if (!fs::is_regular_file(input, ec)) {
      return Status::Error(input + ": not found or not a file; give one folder or the "
                           "export's .onnx and extras_*.safetensors files");
    }
  }
  return inputs;
}

Status AddFile(const std::string& path, ExportSet* set) {
  if (path.ends_with(".safetensors")) {
    SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
    auto component = file->metadata().find("sdonnx.component");
    if (component == file->metadata().end() || component->second != kExtrasComponent) {
      return Status::Error(path + ": not an sdonnx extras file (its metadata has no "
                           "sdonnx.component = extras)");
    }
    if (set->extras) {
      return Status::Error(path + ": a second extras file (the first is " +
                           set->extras->path() + "); give the files of one export");
    }
    SDONNX_ASSIGN_OR_RETURN(set->record, ParseSourceRecord(path, file->metadata()));
    set->extras = std::move(file);
    return Status::Ok();
  }
  if (!path.ends_with(".onnx")) {
    return Status::Error(path + ": not part of an sdonnx export (expected .onnx or "
                         "extras_*.safetensors)");
  }
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<OnnxFile> model, OnnxFile::Open(path));
  if (!model->made_by_sdonnx() || model->MetadataValue("sdonnx.component").empty()) {
    return Status::Error(path + ": was not written by sdonnx (producer '" +
                         model->model().producer_name() +
                         "'); for a diffusers ONNX export give its folder (the one holding "
                         "unet/model.onnx)");
  }
  set->models.push_back(std::move(model));
  return Status::Ok();
}

// Every file must come from the same source, and no weight may have been
// converted to another precision.
Status CheckExportSet(const ExportSet& set) {
  const std::string& first_path = set.models.empty() ? set.extras->path() : set.models[0]->path();
  const std::string first_sha = set.models.empty()
                                    ? set.record.source_sha256
                                    : set.models[0]->MetadataValue("sdonnx.source_sha256");
  std::set<std::string> seen;
  for (const auto& model : set.models) {
    const std::string sha = model->MetadataValue("sdonnx.source_sha256");
    if (sha != first_sha) {
      return Status::Error(model->path() + ": converted from another checkpoint (source SHA-256 " +
                           sha + ") than " + first_path + " (" + first_sha +
                           "); give the files of one export");
    }
    const std::string component = model->MetadataValue("sdonnx.component");
    if (!seen.insert(component).second) {
      return Status::Error(model->path() + ": a second '" + component +
                           "' model; give the files of one export");
    }
    const std::string precision = model->MetadataValue("sdonnx.weight_precision");
    // fp32 weights are widened exactly and narrowed back in VerifyTensors.
    if (!precision.empty() && precision != "source" && precision != "fp32") {
      return Status::Error(model->path() + ": its weights were converted to " + precision +
                           " (sdonnx.weight_precision), so the source bytes are lost and an "
                           "exact rebuild is impossible; convert the checkpoint again without "
                           "changing the weight precision");
    }
  }
  if (set.extras && set.record.source_sha256 != first_sha) {
    return Status::Error(set.extras->path() + ": belongs to another checkpoint (source SHA-256 " +
                         set.record.source_sha256 + ") than " + first_path + " (" + first_sha +
                         ")");
  }
  return Status::Ok();
}

// "unet_STEM.onnx" -> "STEM".
std::string StemOf(const OnnxFile& model) {
  const std::string name = fs::path(model.path()).stem().string();
  const std::string prefix = model.MetadataValue("sdonnx.component") + "_";
  return name.starts_with(prefix) ? name.substr(prefix.size()) : name;
}

Status RequireExtras(const ExportSet& set) {
  if (set.extras) return Status::Ok();
  const OnnxFile& model = *set.models.front();
  if (model.MetadataValue("sdonnx.components").empty()) {
    return Status::Error(model.path() + ": was written by an sdonnx without rebuild support "
                         "(no sdonnx.components metadata and no extras file); convert the "
                         "checkpoint again");
  }
  return Status::Error("component extras (" + ExtrasFileName(StemOf(model)) +
                       ") is missing; it holds the source's key order, tensor digests and the "
                       "tensors no graph uses, so nothing can be rebuilt without it");
}

// Finds every source tensor in the models or the extras file and fills the
// report's component list.
std::map<std::string, TensorSource> LocateTensors(const ExportSet& set, RebuildReport* report) {
  std::map<std::string, TensorSource> found;
  std::map<std::string, const OnnxFile*> by_component;
  for (const auto& model : set.models) {
    by_component[model->MetadataValue("sdonnx.component")] = model.get();
  }
  for (const std::string& component : set.record.components) {
    RebuiltComponent entry{component, "", 0};
    if (component == kExtrasComponent) {
      entry.file = set.extras->path();
      for (const TensorInfo& t : set.extras->tensors()) {
        const SafetensorsFile* extras = set.extras.get();
        found.emplace(t.name, TensorSource{extras->Data(t), t.dtype, t.shape,
                                           report->components.size(), extras->path(), t.offset,
                                           [extras, &t] {
                                             extras->file().DontNeed(t.offset, t.nbytes);
                                           }});
      }
    } else if (auto it = by_component.find(component); it != by_component.end()) {
      entry.file = it->second->path();
      // Weights from a separate --vae file are not the source's tensors.
      if (it->second->MetadataValue("sdonnx.weights_file").empty()) {
        for (const OnnxInitializer& init : it->second->initializers()) {
          const OnnxFile* model = it->second;
          const std::string holder =
              init.storage == InitializerStorage::kExternal
                  ? (fs::path(model->path()).parent_path() / init.location).string()
                  : model->path();
          found.emplace(init.name, TensorSource{model->Data(init), init.dtype, init.dims,
                                                report->components.size(), holder, init.offset,
                                                [model, &init] { model->ReleasePages(init); }});
        }
      }
    } else {
      report->missing_components.push_back(component);
    }
    report->components.push_back(entry);
  }
  return found;
}

// Checks each source tensor against the record and returns those to write.
VerifiedTensors VerifyTensors(const SourceRecord& record,
                              const std::map<std::string, TensorSource>& found,
                              RebuildReport* report) {
  VerifiedTensors verified;
  for (const SourceTensor& expected : record.tensors) {
    auto it = found.find(expected.key);
    if (it == found.end()) {
      report->missing_keys.push_back(expected.key);
      continue;
    }
    const TensorSource& source = it->second;
    // convert --fp32-weights stores float16 and bfloat16 tensors widened
    // to float32; they are narrowed back, which must be exact.
    const bool widened = source.dtype == DType::kF32 &&
                         (expected.dtype == DType::kF16 || expected.dtype == DType::kBF16);
    std::string difference;
    if (source.dtype != expected.dtype && !widened) {
      difference = "dtype " + std::string(DTypeName(source.dtype)) + ", source " +
                   std::string(DTypeName(expected.dtype));
    } else if (source.shape != expected.shape) {
      difference = "shape " + ShapeText(source.shape) + ", source " + ShapeText(expected.shape);
    } else {
      std::vector<std::uint8_t> narrowed;
      std::span<const std::uint8_t> bytes = source.data;
      if (widened) {
        narrowed.resize(source.data.size() / 2);
        if (!NarrowExactly(source.data, expected.dtype, narrowed)) {
          difference = "float32 values that are not exact " +
                       std::string(DTypeName(expected.dtype)) + " values";
        }
        bytes = narrowed;
      }
      const bool same_digest =
          difference.empty() && TensorDigestHex(record.tensor_digest, bytes) == expected.digest;
      if (source.release) source.release();
      if (difference.empty() && !same_digest) {
        difference = std::string(TensorDigestLabel(record.tensor_digest)) +
                     " digest differs from the one recorded at export";
      }
    }
    if (!difference.empty()) {
      report->differing_keys.push_back(expected.key + " (" + difference + "; stored in " +
                                       source.file + " from byte " +
                                       std::to_string(source.offset) + ", " +
                                       std::to_string(source.data.size()) + " bytes)");
      continue;
    }
    ++report->components[source.component].tensors;
    TensorToWrite tensor{expected.key, expected.dtype, expected.shape, source.data, {}};
    if (widened) {
      tensor.data = {};
      tensor.generate = [wide = source.data, dtype = expected.dtype](std::span<std::uint8_t> out) {
        // These bytes passed NarrowExactly above, unless the file changed since.
        (void)NarrowExactly(wide, dtype, out);
      };
    }
    verified.tensors.push_back(std::move(tensor));
    verified.releases.push_back(source.release);
  }
  return verified;
}

std::string ListText(const std::vector<std::string>& items, std::size_t limit) {
  std::string text;
  for (std::size_t i = 0; i < items.size() && i < limit; ++i) {
    text += (i ? ", " : "") + items[i];
  }
  if (items.size() > limit) text += ", and " + std::to_string(items.size() - limit) + " more";
  return text;
}

Status IncompleteError(const RebuildReport& report, const ExportSet& set) {
  std::string message;
  const std::string stem = set.models.empty() ? "" : StemOf(*set.models.front());
  for (const std::string& c : report.missing_components) {
    message += "component " + c + " (" + c + "_" + stem + ".onnx) is missing; ";
  }
  if (!report.missing_keys.empty()) {
    message += std::to_string(report.missing_keys.size()) + " source tensors are in no input: " +
               ListText(report.missing_keys, 5) + "; ";
  }
  if (!report.differing_keys.empty()) {
    const std::size_t n = report.differing_keys.size();
    message += std::to_string(n) + (n == 1 ? " tensor differs" : " tensors differ") +
               " from the source: " + ListText(report.differing_keys, 20) + "; ";
  }
  message += "nothing was written. ";
  const bool incomplete = !report.missing_components.empty() || !report.missing_keys.empty();
  if (incomplete) message += "Give the complete export";
  if (!report.differing_keys.empty()) {
    // A digest that differs means bytes changed after convert wrote them,
    // which no other file of the export can repair.
    message += std::string(incomplete ? ". " : "") +
               "The files named were changed or damaged after convert wrote them, so convert "
               "the checkpoint again";
  }
  return Status::Error(message + ", or pass --allow-partial to write the verified tensors as a "
                       "partial file");
}

// The bytes a verified tensor takes in the output: its data's, or for a
// widened tensor, which is narrowed while written, those of its shape.
std::uint64_t OutputBytes(const TensorToWrite& t) {
  if (!t.generate) return t.data.size();
  std::uint64_t bytes = DTypeSize(t.dtype);
  for (const std::int64_t d : t.shape) bytes *= static_cast<std::uint64_t>(d);
  return bytes;
}

// The tensors as WriteSafetensors entries that copy each one's bytes and
// then release its source pages, so a memory-mapped source does not stay
// resident while the output is written.
std::vector<TensorToWrite> Streamed(const VerifiedTensors& verified) {
  std::vector<TensorToWrite> streamed;
  for (std::size_t i = 0; i < verified.tensors.size(); ++i) {
    TensorToWrite t = verified.tensors[i];
    const std::span<const std::uint8_t> data = t.data;
    const std::function<void()>& release = verified.releases[i];
    t.data = {};
    t.generate = [data, narrow = t.generate, &release](std::span<std::uint8_t> out) {
      if (narrow) {
        narrow(out);
      } else if (!data.empty()) {
        std::memcpy(out.data(), data.data(), data.size());
      }
      if (release) release();
    };
    streamed.push_back(std::move(t));
  }
  return streamed;
}

// The tensor positions that the source's header gives: (begin, index into
// the tensors) sorted by begin, and the end of the data section.
struct HeaderLayout {
  std::vector<std::pair<std::uint64_t, std::size_t>> order;
  std::uint64_t data_end = 0;
};

// Checks one tensor's entry of the source header against the verified
// tensor and returns where its bytes begin.
Result<std::uint64_t> CheckHeaderEntry(const nlohmann::json& header, const TensorToWrite& t) {
  auto it = header.find(t.name);
  if (it == header.end() || !it->is_object()) {
    return Status::Error("it has no entry for tensor '" + t.name + "'");
  }

  const std::string where = "its entry for tensor '" + t.name + "' ";
  const auto& dtype = it->value("dtype", nlohmann::json());
  const auto& shape = it->value("shape", nlohmann::json());
  const auto& offsets = it->value("data_offsets", nlohmann::json());
  if (!dtype.is_string() || dtype.get<std::string>() != DTypeName(t.dtype)) {
    return Status::Error(where + "has dtype " + dtype.dump() + ", but the tensor is " +
                         std::string(DTypeName(t.dtype)));
  }
  const bool integers = shape.is_array() &&
                        std::all_of(shape.begin(), shape.end(),
                                    [](const nlohmann::json& d) { return d.is_number_integer(); });
  if (!integers || shape.get<std::vector<std::int64_t>>() != t.shape) {
    return Status::Error(where + "has shape " + shape.dump() + ", but the tensor is " +
                         ShapeText(t.shape));
  }

  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return Status::Error(where + "has data_offsets " + offsets.dump() +
                         "; expected [begin, end] as non-negative integers");
  }
  const std::uint64_t begin = offsets[0].get<std::uint64_t>();
  const std::uint64_t end = offsets[1].get<std::uint64_t>();
  if (end < begin || end - begin != OutputBytes(t)) {
    return Status::Error(where + "has data_offsets [" + std::to_string(begin) + ", " +
                         std::to_string(end) + "], which do not span the tensor's " +
                         std::to_string(OutputBytes(t)) + " bytes");
  }
  return begin;
}

// Checks that the header describes exactly these tensors and the recorded
// metadata, without overlaps, and that the gaps between the tensors fit
// the source's size. Every number the rewrite uses comes from here.
Result<HeaderLayout> CheckHeaderLayout(const nlohmann::json& header, const SourceRecord& record,
                                       const std::vector<TensorToWrite>& tensors) {
  if (header.is_discarded()) return Status::Error("it is not valid JSON");
  if (!header.is_object()) return Status::Error("it is not a JSON object");
  const std::uint64_t header_bytes = record.source_header.size();
  const std::uint64_t source_bytes = record.source_bytes;
  if (auto metadata = header.find("__metadata__"); metadata != header.end()) {
    const bool same = metadata->is_object() && nlohmann::json(record.source_metadata) == *metadata;
    if (!same) {
      return Status::Error("its __metadata__ differs from the recorded source metadata "
                           "(sdonnx.source_metadata)");
    }
  }
  const std::size_t entries = header.size() - (header.contains("__metadata__") ? 1 : 0);
  if (entries != tensors.size()) {
    return Status::Error("it lists " + std::to_string(entries) + " tensors, but the source "
                         "record has " + std::to_string(tensors.size()));
  }
  HeaderLayout layout;
  std::uint64_t tensor_bytes = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    SDONNX_ASSIGN_OR_RETURN(std::uint64_t begin, CheckHeaderEntry(header, tensors[i]));
    layout.order.push_back({begin, i});
    tensor_bytes += OutputBytes(tensors[i]);
  }
  std::sort(layout.order.begin(), layout.order.end());
  for (const auto& [begin, index] : layout.order) {
    if (begin < layout.data_end) {
      return Status::Error("tensor '" + tensors[index].name + "' at byte " +
                           std::to_string(begin) + " overlaps the tensor before it, which ends "
                           "at byte " + std::to_string(layout.data_end));
    }
    layout.data_end = begin + OutputBytes(tensors[index]);
  }
  if (layout.data_end > UINT64_MAX - 8 - header_bytes) {
    return Status::Error("its data offsets end at byte " + std::to_string(layout.data_end) +
                         ", past any file size");
  }
  const std::uint64_t file_bytes = 8 + header_bytes + layout.data_end;
  if (source_bytes > 0 && file_bytes > source_bytes) {
    return Status::Error("its length (" + std::to_string(header_bytes) + " bytes) and data "
                         "offsets (up to byte " + std::to_string(layout.data_end) +
                         ") make a file of " + std::to_string(file_bytes) +
                         " bytes, but the source had " + std::to_string(source_bytes) +
                         " (sdonnx.source_bytes)");
  }
  // NOTE: extras files written before sdonnx.source_bytes existed give no
  // size to check gaps against, so gaps larger than all tensor data
  // together are taken as an edit.
  if (source_bytes == 0 && layout.data_end - tensor_bytes > tensor_bytes) {
    return Status::Error("its data offsets leave " + std::to_string(layout.data_end -
                                                                     tensor_bytes) +
                         " bytes of gaps between tensors, more than the " +
                         std::to_string(tensor_bytes) + " bytes of the tensors themselves");
  }
  return layout;
}

// A rebuilt file under its temporary name, hashed while it was written.
struct ExactOutput {
  AtomicFile file;
  // Bytes of the source outside its header and tensors (gaps between the
  // tensors and bytes after the last), which the export does not keep.
  std::uint64_t bytes_outside_tensors = 0;
};

// Writes the tensors under the source's header text, so a source without
// gaps between its tensors comes back byte for byte. A header that does not
// fit the tensors is an error that names the extras file; nothing is
// written then. The file is left under its temporary name for the caller to
// check its hash. Without `overwrite`, an existing `path` is an error.
Result<ExactOutput> WriteWithSourceHeader(const std::string& path, const ExportSet& set,
                                          const VerifiedTensors& verified, bool overwrite) {
  const std::string& header_text = set.record.source_header;
  const nlohmann::json header = nlohmann::json::parse(header_text, nullptr, false);
  Result<HeaderLayout> layout = CheckHeaderLayout(header, set.record, verified.tensors);
  if (header_text.size() > kMaxHeaderBytes) {
    layout = Status::Error("it is " + std::to_string(header_text.size()) + " bytes, past the " +
                           std::to_string(kMaxHeaderBytes) + "-byte limit of a safetensors "
                           "header");
  }
  if (!layout.ok()) {
    return Status::Error(set.extras->path() + ": the recorded source header (metadata "
                         "sdonnx.source_header) does not fit the source's tensors: " +
                         layout.status().message() + "; the extras file was edited or "
                         "damaged, so nothing was written. Convert the checkpoint again");
  }
  SDONNX_ASSIGN_OR_RETURN(AtomicFile out, AtomicFile::Create(path, overwrite));
  SDONNX_RETURN_IF_ERROR(out.HashContents());
  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) {
    length[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(header_text.size()) >> (8 * i));
  }
  SDONNX_RETURN_IF_ERROR(out.Write(std::span<const std::uint8_t>(length, 8)));
  SDONNX_RETURN_IF_ERROR(out.Write(header_text));
  const std::uint64_t data_start = out.bytes_written();
  std::uint64_t tensor_bytes = 0;
  for (const auto& [begin, index] : layout->order) {
    // A gap in the source comes back as zeros. The caller's hash check
    // shows whether the source had other bytes there.
    if (data_start + begin > out.bytes_written()) {
      SDONNX_RETURN_IF_ERROR(out.ExtendTo(data_start + begin));
    }
    const TensorToWrite& tensor = verified.tensors[index];
    if (tensor.generate) {
      std::vector<std::uint8_t> narrowed(OutputBytes(tensor));
      tensor.generate(narrowed);
      SDONNX_RETURN_IF_ERROR(out.Write(narrowed));
    } else {
      SDONNX_RETURN_IF_ERROR(out.Write(tensor.data));
    }
    tensor_bytes += OutputBytes(tensor);
    if (verified.releases[index]) verified.releases[index]();
  }
  const std::uint64_t source_bytes = std::max(set.record.source_bytes, out.bytes_written());
  return ExactOutput{std::move(out), source_bytes - data_start - tensor_bytes};
}

// The message for a rebuilt file whose SHA-256 differs from the source's
// although every tensor matches its digest: an error, or with
// --allow-partial a warning.
std::string FileHashMessage(const std::string& output_path, const ExportSet& set,
                            const std::string& sha256, std::uint64_t bytes_outside_tensors,
                            bool allow_partial) {
  std::string message = set.extras->path() + ": the rebuilt file's SHA-256 is " + sha256 +
                        ", but the source's (sdonnx.source_sha256) is " +
                        set.record.source_sha256 + ", although every tensor matches its digest. ";
  if (bytes_outside_tensors > 0) {
    message += "The source had " + std::to_string(bytes_outside_tensors) +
               " bytes outside its header and tensors (gaps between tensors, or bytes after "
               "the last one). The export does not keep them: rebuild writes zeros in the gaps "
               "and nothing after the last tensor. If the gaps held other bytes, or the source "
               "had bytes after its last tensor, that explains the difference; otherwise the "
               "recorded header or metadata (sdonnx.source_header, sdonnx.source_metadata) was "
               "edited or damaged. ";
  } else {
    message += "This means that the recorded header or metadata (sdonnx.source_header, "
               "sdonnx.source_metadata) was edited or damaged. ";
  }
  if (allow_partial) {
    return message + "--allow-partial was given, so " + output_path + " is written anyway, "
           "with sdonnx's own header and marked partial in its metadata: its tensors are "
           "verified, but the file is not byte-identical to the source";
  }
  message += "Nothing was written to " + output_path + ". Convert the checkpoint again";
  if (bytes_outside_tensors > 0) {
    message += ", or pass --allow-partial to write the file without those bytes";
  }
  return message;
}

// Marks a rebuilt file as partial in its metadata, so that inspect and
// verify never take it for the source checkpoint.
void MarkPartial(const RebuildReport& report, std::map<std::string, std::string>* metadata) {
  (*metadata)["sdonnx.rebuild"] = "partial";
  (*metadata)["sdonnx.rebuild_missing_components"] = JoinComponents(report.missing_components);
  (*metadata)["sdonnx.rebuild_omitted_tensors"] =
      std::to_string(report.missing_keys.size() + report.differing_keys.size());
  (*metadata)["sdonnx.rebuild_source_sha256"] = report.source_sha256;
}

}  // namespace

Result<RebuildReport> RebuildCheckpoint(const RebuildOptions& options) {
  std::error_code ec;
  if (options.output_path.empty()) {
    return Status::Error("no output file; give the checkpoint to write with -o "
                         "OUT.safetensors");
  }
  if (fs::is_directory(options.output_path, ec)) {
    return Status::Error(options.output_path + ": is a folder; give the path of the checkpoint "
                         "file to write, such as " +
                         (fs::path(options.output_path) / "model.safetensors").string());
  }
  if (!options.overwrite && fs::exists(fs::symlink_status(options.output_path, ec))) {
    return Status::Error(options.output_path + ": already exists; pass --force to overwrite it");
  }
  // --force must never replace a file of the export being read.
  if (fs::exists(options.output_path, ec)) {
    const fs::path output_dir = fs::absolute(options.output_path, ec).parent_path();
    for (const std::string& input : options.inputs) {
      const fs::path dir = fs::is_directory(input, ec) ? fs::absolute(input, ec)
                                                       : fs::absolute(input, ec).parent_path();
      if (fs::equivalent(output_dir, dir, ec)) {
        return Status::Error(options.output_path +
                             ": is an existing file in the export's folder; write the rebuilt "
                             "checkpoint to a new file name or another folder");
      }
    }
  }
  if (options.inputs.size() == 1 && fs::is_directory(options.inputs.front(), ec) &&
      IsForeignExportFolder(options.inputs.front())) {
    return RebuildForeignExport(options.inputs.front(), options);
  }
  SDONNX_ASSIGN_OR_RETURN(std::vector<std::string> files, ListExportFiles(options.inputs));
  ExportSet set;
  // Weights are read from memory maps of the models and their external
  // data, and each tensor's pages are dropped once it is written.
  for (const std::string& file : files) SDONNX_RETURN_IF_ERROR(AddFile(file, &set));
  SDONNX_RETURN_IF_ERROR(RequireExtras(set));
  SDONNX_RETURN_IF_ERROR(CheckExportSet(set));

  RebuildReport report;
  report.source_file = set.record.source_file;
  report.source_format = set.record.source_format;
  report.source_sha256 = set.record.source_sha256;
  report.tensor_digest = set.record.tensor_digest;
  const std::map<std::string, TensorSource> found = LocateTensors(set, &report);
  const VerifiedTensors verified = VerifyTensors(set.record, found, &report);
  report.partial = !report.missing_components.empty() || !report.missing_keys.empty() ||
                   !report.differing_keys.empty();
  if (report.partial && !options.allow_partial) return IncompleteError(report, set);

  std::map<std::string, std::string> metadata = set.record.source_metadata;
  if (report.partial) {
    MarkPartial(report, &metadata);
    const std::string& omitted = metadata["sdonnx.rebuild_omitted_tensors"];
    LogWarning(options.output_path + ": writing a partial checkpoint without " + omitted +
               (omitted == "1" ? " source tensor" : " source tensors"));
  }
  report.tensors_written = verified.tensors.size();
  SDONNX_ASSIGN_OR_RETURN(CreatedFolders folders,
                          CreatedFolders::Create(fs::path(options.output_path).parent_path()));
  // The SHA-256 is computed while the file is written and checked before
  // the file is renamed into place, so an output that differs from the
  // source never appears, and a signal leaves no output or the finished one.
  bool written = false;
  if (!report.partial && !set.record.source_header.empty()) {
    SDONNX_ASSIGN_OR_RETURN(ExactOutput exact, WriteWithSourceHeader(options.output_path, set,
                                                                     verified, options.overwrite));
    report.bytes = exact.file.bytes_written();
    report.output_sha256 = exact.file.FinishSha256Hex();
    report.file_identical = report.output_sha256 == report.source_sha256;
    if (report.file_identical) {
      SDONNX_RETURN_IF_ERROR(exact.file.Commit());
      written = true;
    } else {
      const std::string message =
          FileHashMessage(options.output_path, set, report.output_sha256,
                          exact.bytes_outside_tensors, options.allow_partial);
      if (!options.allow_partial) return Status::Error(message);
      LogWarning(message);
      // The recorded header cannot carry the partial marks, so the file is
      // written again below with sdonnx's own header. The temporary file of
      // this attempt is removed when `exact` goes out of scope.
      report.partial = true;
      MarkPartial(report, &metadata);
      metadata["sdonnx.rebuild_file_sha256_differs"] = "true";
    }
  }
  if (!written) {
    // The writer's messages already name the output file. The file cannot
    // equal the source: its header is sdonnx's own (a .ckpt source, an
    // extras file without the source header, or a partial rebuild).
    SDONNX_ASSIGN_OR_RETURN(
        AtomicFile out, WriteHashedSafetensors(options.output_path, Streamed(verified), metadata,
                                               options.overwrite));
    report.bytes = out.bytes_written();
    report.output_sha256 = out.FinishSha256Hex();
    SDONNX_RETURN_IF_ERROR(out.Commit());
  }
  folders.Keep();
  return report;
}

}  // namespace sdonnx
