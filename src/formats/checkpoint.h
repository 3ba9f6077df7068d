// A single-file Stable Diffusion checkpoint opened for reading: the tensors
// of a .safetensors file or of a PyTorch .ckpt (zip or legacy format, read
// by a restricted unpickler), looked up by their original keys. The format
// is identified from the bytes, not from the extension.
#pragma once

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "formats/mapped_file.h"
#include "formats/safetensors.h"
#include "util/status.h"

namespace sdonnx {

// A tensor shape as "[64,64,3,3]"; "[]" for a scalar.
std::string ShapeText(const std::vector<std::int64_t>& shape);

class Checkpoint {
 public:
  static Result<std::unique_ptr<Checkpoint>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  // "safetensors" or "ckpt".
  const std::string& format() const { return format_; }
  // The tensor stored under `key`. With the EMA view on, UNet keys
  // ("model.diffusion_model.X.Y") resolve to their EMA shadows
  // ("model_ema.diffusion_modelXY"); the returned tensor keeps its real name.
  const TensorInfo* Find(const std::string& key) const;
  // The tensor stored under exactly `key`, whatever the view.
  const TensorInfo* FindStored(const std::string& key) const;
  bool Has(const std::string& key) const { return Find(key) != nullptr; }
  std::span<const std::uint8_t> Data(const TensorInfo& t) const;
  // Tensors in file order (safetensors) or state-dict order (.ckpt).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const MappedFile& mapped() const { return *file_; }
  // A safetensors file's __metadata__; empty for .ckpt files.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Problems that do not stop the file from loading.
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Keys that start with `prefix`, in file order.
  std::vector<const TensorInfo*> WithPrefix(const std::string& prefix) const;
  bool HasPrefix(const std::string& prefix) const;

  // Makes Find(original) return the tensor stored under aliases[original]
  // (for files saved with another naming, such as diffusers' VAEs).
  void AddAliases(std::map<std::string, std::string> aliases) { aliases_ = std::move(aliases); }

  // Switches the EMA view of the UNet weights on or off.
  void UseEmaUNet(bool on) { ema_unet_ = on; }
  bool ema_unet() const { return ema_unet_; }
  // The key under which ldm stores the EMA shadow of UNet key `key`.
  static std::string EmaKey(const std::string& key);

  // Reads a tensor of any floating or integer dtype as float32 values.
  Result<std::vector<float>> ReadAsFloat(const std::string& key) const;

 private:
  Status LoadSafetensors();
  Status LoadTorch();

  std::unique_ptr<MappedFile> file_;
  std::string format_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t> index_;
  std::vector<std::string> warnings_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::vector<std::uint8_t>> in_memory_;  // by tensor name
  std::map<std::string, std::string> aliases_;
  bool ema_unet_ = false;
};

}  // namespace sdonnx
