// Reader and writer for the safetensors format.
//
// File layout, as the reader validates it:
//  1. 8 bytes: N, the header length, an unsigned little-endian 64-bit integer.
//     N must fit in the file and stay under kMaxHeaderBytes.
//  2. N bytes: a UTF-8 JSON object (it must start with '{'). Each key is a
//     tensor name mapped to {"dtype": "F32", "shape": [..], "data_offsets":
//     [begin, end]}; the optional key "__metadata__" maps to an object of
//     string values. Names are unique.
//  3. The data section: every tensor occupies [begin, end) relative to the
//     first byte after the header, with end - begin = product(shape) x the
//     dtype's size. Ranges may not overlap or reach past the end of the file.
//     Gaps between ranges and bytes after the last range are legal but odd,
//     and are reported as warnings.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "formats/mapped_file.h"
#include "util/atomic_file.h"
#include "util/status.h"

namespace sdonnx {

inline constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t offset = 0;  // Absolute byte offset in the file.
  std::uint64_t nbytes = 0;
  // The bytes are not a range of the file but were copied out (a strided
  // view in a .ckpt); `offset` is then meaningless.
  bool in_memory = false;

  std::int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  // Maps `path` read-only and validates its header against the file size.
  static Result<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  // Tensors in the order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* Find(const std::string& name) const;
  std::span<const std::uint8_t> Data(const TensorInfo& tensor) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Problems that do not stop the file from loading (gaps, trailing bytes).
  const std::vector<std::string>& warnings() const { return warnings_; }
  const MappedFile& file() const { return *file_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
  std::vector<std::string> warnings_;
};

// Parses the header bytes of a safetensors file of `file_size` bytes. Exposed
// separately so that tests and fuzzers can drive it without a file.
Status ParseSafetensorsHeader(const std::string& path, std::span<const std::uint8_t> bytes,
                              std::vector<TensorInfo>* tensors,
                              std::map<std::string, std::string>* metadata,
                              std::vector<std::string>* warnings);

// One tensor to write: its bytes come from `data`, or else from `generate`,
// which fills a buffer of the tensor's size. With neither, the bytes are left
// as a hole in a sparse file and read back as zeros.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::span<const std::uint8_t> data;
  std::function<void(std::span<std::uint8_t>)> generate;
};

// Writes a safetensors file with tensors laid out in the given order and the
// header padded with spaces to a multiple of 8 bytes. The file is written
// under a temporary name beside `path` and renamed at the end. Without
// `overwrite`, an existing `path` is an error (AtomicFile::Create).
Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata, bool overwrite = true);

// Writes the file as WriteSafetensors does but leaves it under its
// temporary name, with the SHA-256 of its bytes computed while they were
// written (AtomicFile::HashContents). The caller checks it and calls
// Commit(); destroying the result removes the temporary.
Result<AtomicFile> WriteHashedSafetensors(const std::string& path,
                                          const std::vector<TensorToWrite>& tensors,
                                          const std::map<std::string, std::string>& metadata,
                                          bool overwrite = true);

}  // namespace sdonnx
