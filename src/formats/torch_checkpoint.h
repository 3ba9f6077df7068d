// A safe reader for PyTorch .ckpt/.pt checkpoints, in both formats that
// torch.save writes:
//  * zip (the default since torch 1.6): a zip archive of stored, uncompressed
//    records under one top folder, `<name>/data.pkl` (the pickled object) and
//    `<name>/data/<key>` (the raw bytes of each storage).
//  * legacy (`_use_new_zipfile_serialization=False`): five pickles in a row
//    (magic number, protocol version 1001, sys_info, the object, the list of
//    storage keys), then for each key in that list an 8-byte little-endian
//    element count followed by the storage's raw bytes.
//
// The pickles are read with the restricted unpickler in formats/pickle.h, so
// loading a checkpoint never runs code from it. Tensor bytes are not copied
// unless a tensor is a strided view that is not plain row-major.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "formats/mapped_file.h"
#include "util/status.h"

namespace sdonnx {

struct TorchTensor {
  std::string name;  // State-dict key.
  DType dtype = DType::kF32;
  std::vector<std::int64_t> shape;
  std::uint64_t nbytes = 0;
  // Contiguous tensors: the bytes are [file_offset, file_offset + nbytes) of
  // the .ckpt file. Others (views with strides or offsets that are not plain
  // row-major): the bytes, copied out in row-major order.
  bool in_file = true;
  std::uint64_t file_offset = 0;
  std::vector<std::uint8_t> materialized;
};

struct TorchCheckpoint {
  std::vector<TorchTensor> tensors;           // In the pickle's dict order.
  bool had_state_dict_wrapper = false;        // Top level was {"state_dict": ..., ...}.
  std::map<std::string, std::string> extras;  // Other top-level scalars, e.g. global_step -> "123".
};

// True if the bytes start like a torch zip checkpoint (a zip whose first
// record is `.../data.pkl`) or a legacy torch pickle (its magic number).
bool LooksLikeTorchCheckpoint(std::span<const std::uint8_t> bytes);
// Whether the zip archive in `bytes` (the file at `path`) has a data.pkl
// record where torch.save puts it, at the top or one folder down. An
// unreadable zip directory is an error.
Result<bool> ZipHasDataPkl(const std::string& path, std::span<const std::uint8_t> bytes);

// Reads the tensors of a checkpoint whose top-level object is a state dict
// (a dict of tensors) or a dict with a "state_dict" entry. Top-level values
// that are not tensors, the state dict or scalars are skipped, but every
// global they reference must still be on the unpickler's allow-list.
Result<TorchCheckpoint> ReadTorchCheckpoint(const MappedFile& file);
// The same for the bytes of a checkpoint in memory; errors name `path`.
Result<TorchCheckpoint> ReadTorchCheckpoint(const std::string& path,
                                            std::span<const std::uint8_t> bytes);

}  // namespace sdonnx
