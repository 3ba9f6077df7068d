// The extras file that `convert` writes beside the ONNX files, so that
// `rebuild` can restore the source checkpoint exactly.
//
// extras_STEM.safetensors contains every source tensor that no graph uses (EMA
// shadows, or the main UNet weights under --ema; schedule buffers;
// position_ids; marker keys; the checkpoint's own VAE when --vae replaced
// it) with its original key, dtype and bytes. Its __metadata__ is the
// source record: the source's tensor list in source order with each
// tensor's dtype, shape and digest (rebuild/source_digests.h), the source's
// own __metadata__, the component files of the export, and a safetensors
// source's header text.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/dtype.h"
#include "graph/model_writer.h"
#include "rebuild/source_digests.h"
#include "util/status.h"

namespace sdonnx {

// The sdonnx.component value of the extras file.
inline constexpr char kExtrasComponent[] = "extras";

// "extras_STEM.safetensors".
std::string ExtrasFileName(const std::string& stem);

struct SourceTensor {
  std::string key;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  // The tensor's digest in lowercase hex, computed with SourceRecord::tensor_digest.
  std::string digest;
};

struct SourceRecord {
  std::string source_file;
  std::string source_sha256;
  std::string source_format;  // "safetensors" or "ckpt"
  std::vector<SourceTensor> tensors;  // In source order.
  // The algorithm of SourceTensor::digest (sdonnx.tensor_digest); SHA-256
  // in extras files written before sdonnx recorded it.
  TensorDigest tensor_digest = TensorDigest::kXxh3_128;
  std::map<std::string, std::string> source_metadata;
  // The components of the export, extras included (sdonnx.components).
  std::vector<std::string> components;
  // A safetensors source's JSON header, verbatim, so that rebuild can
  // restore the file byte for byte; empty for other formats.
  std::string source_header;
  // The source file's size (sdonnx.source_bytes); 0 in extras files written
  // before sdonnx recorded it.
  std::uint64_t source_bytes = 0;
};

// The JSON header of the safetensors file in `bytes` (already validated).
std::string SafetensorsHeaderText(std::span<const std::uint8_t> bytes);

// "a,b,c" and back; the format of sdonnx.components.
std::string JoinComponents(const std::vector<std::string>& components);
std::vector<std::string> SplitComponents(const std::string& text);

// Writes the extras file at `path`: the checkpoint tensors not in `used`,
// in source order, with the record as metadata. `metadata` adds entries
// (sdonnx.version and the like).
Result<WrittenFile> WriteExtrasFile(const std::string& path, const Checkpoint& checkpoint,
                                    const std::set<std::string>& used, const SourceRecord& record,
                                    std::map<std::string, std::string> metadata);

// Reads the record from an extras file's metadata.
Result<SourceRecord> ParseSourceRecord(const std::string& path,
                                       const std::map<std::string, std::string>& metadata);

}  // namespace sdonnx
