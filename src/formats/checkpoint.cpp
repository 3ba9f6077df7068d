#include "formats/checkpoint.h"

#include <cstring>

namespace sdonnx {

Result<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  SDONNX_ASSIGN_OR_RETURN(checkpoint->file_, SafetensorsFile::Open(path));
  return checkpoint;
}

std::string Checkpoint::EmaKey(const std::string& key) {
  const std::string prefix = "model.";
  std::string out = "model_ema.";
  for (std::size_t i = prefix.size(); i < key.size(); ++i) {
    if (key[i] != '.') out += key[i];
  }
  return out;
}

const TensorInfo* Checkpoint::Find(const std::string& key) const {
  if (ema_unet_ && key.starts_with("model.diffusion_model.")) return file_->Find(EmaKey(key));
  return file_->Find(key);
}

std::vector<const TensorInfo*> Checkpoint::WithPrefix(const std::string& prefix) const {
  std::vector<const TensorInfo*> out;
  for (const TensorInfo& t : file_->tensors()) {
    if (t.name.starts_with(prefix)) out.push_back(&t);
  }
  return out;
}

bool Checkpoint::HasPrefix(const std::string& prefix) const {
  for (const TensorInfo& t : file_->tensors()) {
    if (t.name.starts_with(prefix)) return true;
  }
  return false;
}

Result<std::vector<float>> Checkpoint::ReadAsFloat(const std::string& key) const {
  const TensorInfo* t = Find(key);
  if (t == nullptr) return Status::Error(path() + ": tensor '" + key + "' is missing");
  auto bytes = Data(*t);
  const auto n = static_cast<std::size_t>(t->NumElements());
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* p = bytes.data() + i * DTypeSize(t->dtype);
    switch (t->dtype) {
      case DType::kF32: std::memcpy(&out[i], p, 4); break;
      case DType::kF64: { double d; std::memcpy(&d, p, 8); out[i] = static_cast<float>(d); break; }
      case DType::kF16: { std::uint16_t h; std::memcpy(&h, p, 2); out[i] = HalfToFloat(h); break; }
      case DType::kBF16: { std::uint16_t h; std::memcpy(&h, p, 2); out[i] = BFloat16ToFloat(h); break; }
      case DType::kI64: { std::int64_t v; std::memcpy(&v, p, 8); out[i] = static_cast<float>(v); break; }
      case DType::kI32: { std::int32_t v; std::memcpy(&v, p, 4); out[i] = static_cast<float>(v); break; }
      case DType::kI16: { std::int16_t v; std::memcpy(&v, p, 2); out[i] = v; break; }
      case DType::kI8: out[i] = static_cast<std::int8_t>(*p); break;
      case DType::kU8:
      case DType::kBool: out[i] = *p; break;
    }
  }
  return out;
}

}  // namespace sdonnx
