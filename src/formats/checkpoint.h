// A single-file Stable Diffusion checkpoint opened for reading: the tensors
// of a safetensors file, looked up by their original keys.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "util/status.h"

namespace sdonnx {

class Checkpoint {
 public:
  static Result<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const TensorInfo* Find(const std::string& key) const { return file_->Find(key); }
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
  std::span<const std::uint8_t> Data(const TensorInfo& t) const { return file_->Data(t); }
  const std::vector<TensorInfo>& tensors() const { return file_->tensors(); }
  const SafetensorsFile& file() const { return *file_; }

  // Keys that start with `prefix`, in file order.
  std::vector<const TensorInfo*> WithPrefix(const std::string& prefix) const;
  bool HasPrefix(const std::string& prefix) const;

  // Reads a tensor of any floating or integer dtype as float32 values.
  Result<std::vector<float>> ReadAsFloat(const std::string& key) const;

 private:
  std::unique_ptr<SafetensorsFile> file_;
};

}  // namespace sdonnx
