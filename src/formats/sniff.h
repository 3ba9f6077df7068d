// Identifies what a file is from its first bytes, whatever its extension:
// the model formats sdonnx reads, and the files that are often saved in
// their place (a Git LFS pointer, a download page).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "util/status.h"

namespace sdonnx {

enum class FileFormat {
  kEmpty,
  kSafetensors,     // 8-byte little-endian header length, then '{'
  kTorchZip,        // a zip whose first record is .../data.pkl (torch.save since 1.6)
  kZip,             // any other zip archive
  kTorchLegacy,     // the pickled torch magic number (torch.save before 1.6)
  kPickle,          // a pickle that is not a torch checkpoint
  kGitLfsPointer,   // "version https://git-lfs.github.com/spec/v1" text
  kHtml,            // a web page, such as a saved download or login page
  kOnnx,            // a protobuf ModelProto: ir_version first
  kUnknown,
};

// "safetensors", "PyTorch zip checkpoint", ...: a name for people.
std::string FileFormatName(FileFormat format);
// A stable identifier for JSON output: "safetensors", "torch-zip", ...
std::string FileFormatId(FileFormat format);

// Identifies `bytes`, the start of a file or the whole of it. The first
// 4 KiB are enough for every format.
FileFormat SniffFormat(std::span<const std::uint8_t> bytes);

// Reads the first 4 KiB of `path` and identifies them.
Result<FileFormat> SniffFile(const std::string& path);

// For files that are not a checkpoint: what the file is and what to do
// instead, as one sentence; empty for the formats sdonnx reads as
// checkpoints (safetensors, torch zip, torch legacy) and for kUnknown.
std::string NotACheckpointAdvice(FileFormat format);

}  // namespace sdonnx
