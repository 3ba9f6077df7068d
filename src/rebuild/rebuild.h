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
  // the output's metadata then marks it partial. Also write a complete
  // rebuild whose SHA-256 differs from the source's, with a warning.
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
  std::string source_format;  // sdonnx.source_format: "safetensors" or "ckpt".
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
  // The written file's SHA-256, and whether it equals the source file's.
  // Without --allow-partial, a safetensors source that does not come back
  // identical is an error, so then it always does.
  std::string output_sha256;
  bool file_identical = false;
  std::uint64_t bytes = 0;
  // A diffusers/optimum ONNX folder was rebuilt: no source record, so no
  // hashes, and only the weights the graphs use come back.
  bool foreign = false;
  // Initializers of a foreign export that map to no checkpoint key, each
  // with why.
  std::vector<std::string> unmapped;
};

// Rebuilds the checkpoint. Without allow_partial, a missing component, a
// differing tensor or (for a safetensors source) a file whose SHA-256
// differs from the source's is an error that names them, and nothing is
// written. Missing parent folders of the output are created, and removed
// again if the rebuild fails.
// A single folder in diffusers' ONNX layout (unet/model.onnx, ...) is mapped
// back to checkpoint keys instead (see rebuild/foreign_keys.h).
Result<RebuildReport> RebuildCheckpoint(const RebuildOptions& options);

}  // namespace sdonnx
