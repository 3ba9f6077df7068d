// Summaries of ONNX files and folders of them, for `sdonnx inspect`.
// Files are parsed with onnx::ModelProto. External data files are checked
// for existence, size and their sdonnx header; their tensors are never read.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace sdonnx {

struct OnnxValueSummary {
  std::string name;
  std::string dtype;               // "F32", "I32", ...
  std::vector<std::string> shape;  // a number, a dimension name, or "?"
};

struct TruncatedDataFile {
  std::string location;  // as named in the model
  std::uint64_t expected_bytes = 0;  // the end of the last initializer in it
  std::uint64_t actual_bytes = 0;
};

struct OnnxFileSummary {
  std::string path;
  std::uint64_t file_bytes = 0;
  // unet, vae_encoder, vae_decoder, clip_text, clip_text_2, or "unknown":
  // from sdonnx's metadata, else from the file or folder name.
  std::string component;
  std::string component_basis;
  bool made_by_sdonnx = false;
  std::int64_t ir_version = 0;
  std::string producer;
  std::map<std::string, std::int64_t> opsets;  // domain ("" is ai.onnx) -> version
  std::map<std::string, std::string> metadata;
  std::vector<OnnxValueSummary> inputs;
  std::vector<OnnxValueSummary> outputs;
  std::size_t nodes = 0;
  std::size_t initializers = 0;
  std::int64_t parameters = 0;
  std::map<std::string, std::size_t> dtypes;  // initializer dtype -> count
  std::vector<std::string> external_data_files;  // as named, relative to the model
  std::vector<std::string> missing_external_data_files;
  // External data locations that are absolute or contain "..": they point
  // outside the model's folder, so they are reported and not looked up.
  std::vector<std::string> unsafe_external_data_files;
  // External data locations with a symlink in them, which extract, rebuild
  // and ONNX Runtime reject.
  std::vector<std::string> symlinked_external_data_files;
  // External data files shorter than the initializers that point into them.
  std::vector<TruncatedDataFile> truncated_external_data_files;
  // sd1, sd2, sdxl, sdxl-refiner: from sdonnx.family, or for a UNet without
  // that metadata from its initializer shapes; empty when unknown.
  std::string family;
  std::string family_basis;
  std::vector<std::string> warnings;
  // Reasons the file cannot be used as it is, such as an external data file
  // of another conversion (formats/conversion_id.h).
  std::vector<std::string> problems;
};

struct OnnxFolderSummary {
  std::string path;
  std::vector<OnnxFileSummary> files;
  std::string family;  // from sdonnx metadata, or inferred; may be empty
  std::string family_basis;
  std::vector<std::string> present_components;
  std::vector<std::string> missing_components;  // of a full pipeline of `family`
  std::vector<std::string> warnings;
  // Files that cannot be read, and files of different conversions. The
  // files' own problems are in `files`.
  std::vector<std::string> problems;
  // The files come from more than one checkpoint (sdonnx.source_sha256).
  bool several_checkpoints = false;
  // For an export that sdonnx wrote: the extras file's name, or empty when
  // it is missing, and whether `sdonnx rebuild` can restore the source
  // checkpoint, with the reason when it cannot. Both empty for other
  // folders.
  std::string extras_file;
  std::string rebuild;
  bool rebuild_possible = false;
};

Result<OnnxFileSummary> InspectOnnxFile(const std::string& path);
// Lists why the weights of `file` cannot be read as the export wrote them:
// its problems, and external data that is missing, truncated, a symlink or
// outside the folder. Each line starts with the file name.
std::vector<std::string> FileDamage(const OnnxFileSummary& file);
// Reads every .onnx file in `path` and in its direct subfolders (the
// diffusers layout: unet/model.onnx, ...). A file that cannot be parsed is
// listed in `problems` and the others are still summarized.
Result<OnnxFolderSummary> InspectOnnxFolder(const std::string& path);

nlohmann::json OnnxFileSummaryJson(const OnnxFileSummary& summary);
nlohmann::json OnnxFolderSummaryJson(const OnnxFolderSummary& summary);

}  // namespace sdonnx
