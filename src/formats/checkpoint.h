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
  // The tensor stored under `key`. With the EMA view on, UNet keys
  // ("model.diffusion_model.X.Y") resolve to their EMA shadows
  // ("model_ema.diffusion_modelXY"); the returned tensor keeps its real name.
  const TensorInfo* Find(const std::string& key) const;
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
  std::span<const std::uint8_t> Data(const TensorInfo& t) const { return file_->Data(t); }
  const std::vector<TensorInfo>& tensors() const { return file_->tensors(); }
  const SafetensorsFile& file() const { return *file_; }

  // Keys that start with `prefix`, in file order.
  std::vector<const TensorInfo*> WithPrefix(const std::string& prefix) const;
  bool HasPrefix(const std::string& prefix) const;

  // Switches the EMA view of the UNet weights on or off.
  void UseEmaUNet(bool on) { ema_unet_ = on; }
  bool ema_unet() const { return ema_unet_; }
  // The key under which ldm stores the EMA shadow of UNet key `key`.
  static std::string EmaKey(const std::string& key);

  // Reads a tensor of any floating or integer dtype as float32 values.
  Result<std::vector<float>> ReadAsFloat(const std::string& key) const;

 private:
  std::unique_ptr<SafetensorsFile> file_;
  bool ema_unet_ = false;
};

}  // namespace sdonnx
