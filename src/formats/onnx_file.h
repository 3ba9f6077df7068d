// Reader for .onnx model files and their initializers, including weights
// stored as external data.
//
// Open() validates every initializer before anything reads it:
//  - its dtype is one safetensors can store (see formats/dtype.h);
//  - its byte count, from raw_data, the typed fields (float_data, int32_data,
//    ...) or the external data length, equals product(dims) x dtype size;
//  - an external data `location` is relative, has no ".." component and
//    no symlink in any component below the model's folder, names a regular
//    file, and that file contains [offset, offset + length).
// The model itself is parsed with protobuf, which limits one message to
// 2 GiB; larger models store their weights as external data. The parse
// leaves out the initializers' raw_data, which Data() reads from a memory
// map of the model file, so weights stored inside the model are not copied
// into memory. model() therefore has no raw_data in its initializers.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "formats/mapped_file.h"
#include "util/status.h"

namespace sdonnx {

// protobuf's limit on one serialized message.
inline constexpr std::uint64_t kMaxOnnxModelBytes = (2ull << 30) - 1;

enum class InitializerStorage { kRawData, kTypedFields, kExternal };

struct OnnxInitializer {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::int64_t> dims;
  std::uint64_t nbytes = 0;
  InitializerStorage storage = InitializerStorage::kRawData;
  // External data only: the data file relative to the model's folder.
  std::string location;
  // The byte offset of the tensor in its external data file, or for
  // raw_data in the model file.
  std::uint64_t offset = 0;
};

class OnnxFile {
 public:
  static Result<std::unique_ptr<OnnxFile>> Open(const std::string& path);

  const std::string& path() const { return path_; }
  const onnx::ModelProto& model() const { return model_; }
  // Initializers in graph order.
  const std::vector<OnnxInitializer>& initializers() const { return initializers_; }
  const OnnxInitializer* Find(const std::string& name) const;
  // The initializer's bytes, little-endian, in its stored dtype.
  std::span<const std::uint8_t> Data(const OnnxInitializer& init) const;
  // Drops the pages of the initializer's bytes from this process after
  // they were read, in its external data file or, for raw_data, in the
  // model file. Weights in the typed fields are in memory, so they stay.
  void ReleasePages(const OnnxInitializer& init) const;
  // metadata_props as a map.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The metadata value of `key`, or "" when absent.
  std::string MetadataValue(const std::string& key) const;
  // Whether sdonnx wrote the file (producer_name "sdonnx").
  bool made_by_sdonnx() const { return model_.producer_name() == "sdonnx"; }
  // Sum of the initializers' byte counts.
  std::uint64_t weight_bytes() const;

 private:
  // The position of a tensor's raw_data in the model file.
  struct RawDataSpan {
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
  };

  OnnxFile() = default;
  // Copies the model file's bytes without the raw_data of its initializers
  // and records where each one's raw_data is, in initializer order. Returns
  // false on malformed protobuf bytes.
  bool CopyWithoutRawData(std::string* out);
  Status LoadInitializer(const onnx::TensorProto& tensor, std::size_t index);
  Status LoadExternal(const onnx::TensorProto& tensor, OnnxInitializer* init);
  Result<const MappedFile*> MapDataFile(const std::string& location);

  std::string path_;
  std::string dir_;
  std::unique_ptr<MappedFile> model_file_;
  // By initializer index; empty when a tensor has no raw_data field.
  std::vector<std::optional<RawDataSpan>> raw_data_;
  onnx::ModelProto model_;
  std::vector<OnnxInitializer> initializers_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
  // Bytes converted from the typed fields, by initializer index.
  std::map<std::size_t, std::vector<std::uint8_t>> converted_;
  std::map<std::string, std::unique_ptr<MappedFile>> data_files_;  // by location
};

// Checks an external data `location` of a model in folder `model_dir`:
// relative, without a ".." component, and without a symlink in any
// component that exists below `model_dir`. With `must_exist`, the file must
// also exist as a regular file. `label` names the tensor for the message.
Status CheckExternalDataLocation(const std::string& model_dir, const std::string& location,
                                 bool must_exist, const std::string& label);

}  // namespace sdonnx
