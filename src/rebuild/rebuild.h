// rebuild: the source checkpoint from a complete set of sdonnx exports.
//
// The ONNX files contain the tensors that the graphs use, under their
// checkpoint keys and in their source dtypes. extras_STEM.safetensors
// contains the rest and the source record (see rebuild/source_record.h). rebuild
// writes the tensors in the source's order with the source's __metadata__,
// after checking each one's dtype, shape and digest against the record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rebuild/source_digests.h"
#include "util/status.h"

namespace sdonnx {

struct RebuildOptions {
  // One folder, or the export's files (.onnx and extras_STEM.safetensors).
  std::vector<std::string> inputs;
  std::string output_path;
  // Write what is present when components are missing or tensors differ;
  // the output's metadata then marks it partial.
  bool allow_partial = false;
  bool overwrite = false;
};

struct RebuiltComponent {
  std::string component;
  std::string file;  // Empty when missing.
  std::size_t tensors = 0;  // Source tensors taken from this file.
};

struct RebuildReport {
  std::string source_file;
  std::string source_sha256;
  // The algorithm of the recorded per-tensor digests.
  TensorDigest tensor_digest = TensorDigest::kXxh3_128;
  std::vector<RebuiltComponent> components;
  std::vector<std::string> missing_components;
  // Source keys that no input holds.
  std::vector<std::string> missing_keys;
  // Source keys whose dtype, shape or digest differ from the record, each
  // with what differs.
  std::vector<std::string> differing_keys;
  std::size_t tensors_written = 0;
  bool partial = false;
  // Whether the written file's SHA-256 equals the source file's (it does
  // when the source's header has the layout sdonnx writes).
  bool file_identical = false;
  std::uint64_t bytes = 0;
  // A diffusers/optimum ONNX folder was rebuilt: no source record, so no
  // hashes, and only the weights the graphs use come back.
  bool foreign = false;
  // Initializers of a foreign export that map to no checkpoint key, each
  // with why.
  std::vector<std::string> unmapped;
};

// Rebuilds the checkpoint. Without allow_partial, a missing component or a
// differing tensor is an error that names them, and nothing is written.
// A single folder in diffusers' ONNX layout (unet/model.onnx, ...) is mapped
// back to checkpoint keys instead (see rebuild/foreign_keys.h).
Result<RebuildReport> RebuildCheckpoint(const RebuildOptions& options);

}  // namespace sdonnx
