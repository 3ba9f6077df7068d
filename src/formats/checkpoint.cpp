#include "formats/checkpoint.h"

#include <cstring>

#include "formats/sniff.h"
#include "formats/torch_checkpoint.h"

namespace sdonnx {

Result<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& path) {
  auto checkpoint = std::unique_ptr<Checkpoint>(new Checkpoint());
  SDONNX_ASSIGN_OR_RETURN(checkpoint->file_, MappedFile::Open(path));
  // Files that are clearly something else get a message that names what
  // they are. Anything unrecognised goes to the safetensors parser, whose
  // errors describe what is wrong with the header.
  const FileFormat format = SniffFormat(checkpoint->file_->bytes());
  if (format == FileFormat::kZip) {
    // torch.save writes data.pkl as the first record, other zip tools may
    // not, so a zip with a data.pkl elsewhere is still read.
    Result<bool> has_data_pkl = ZipHasDataPkl(path, checkpoint->file_->bytes());
    if (!has_data_pkl.ok()) {
      return Status::Error(has_data_pkl.status().message() + "; " + NotACheckpointAdvice(format));
    }
    if (!*has_data_pkl) return Status::Error(path + ": " + NotACheckpointAdvice(format));
    SDONNX_RETURN_IF_ERROR(checkpoint->LoadTorch());
  } else if (const std::string advice = NotACheckpointAdvice(format); !advice.empty()) {
    return Status::Error(path + ": not a checkpoint (" + FileFormatName(format) + "): " + advice);
  } else if (LooksLikeTorchCheckpoint(checkpoint->file_->bytes())) {
    SDONNX_RETURN_IF_ERROR(checkpoint->LoadTorch());
  } else {
    SDONNX_RETURN_IF_ERROR(checkpoint->LoadSafetensors());
  }
  for (std::size_t i = 0; i < checkpoint->tensors_.size(); ++i) {
    checkpoint->index_[checkpoint->tensors_[i].name] = i;
  }
  return checkpoint;
}

Status Checkpoint::LoadSafetensors() {
  format_ = "safetensors";
  return ParseSafetensorsHeader(file_->path(), file_->bytes(), &tensors_, &metadata_, &warnings_);
}

Status Checkpoint::LoadTorch() {
  format_ = "ckpt";
  SDONNX_ASSIGN_OR_RETURN(TorchCheckpoint torch, ReadTorchCheckpoint(*file_));
  for (TorchTensor& t : torch.tensors) {
    TensorInfo info;
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.nbytes = t.nbytes;
    info.offset = t.file_offset;
    info.in_memory = !t.in_file;
    if (info.in_memory) in_memory_[t.name] = std::move(t.materialized);
    tensors_.push_back(std::move(info));
  }
  return Status::Ok();
}

std::span<const std::uint8_t> Checkpoint::Data(const TensorInfo& t) const {
  if (t.in_memory) {
    auto it = in_memory_.find(t.name);
    return it == in_memory_.end() ? std::span<const std::uint8_t>() : it->second;
  }
  return file_->bytes().subspan(t.offset, t.nbytes);
}

const TensorInfo* Checkpoint::FindStored(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &tensors_[it->second];
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
  if (auto alias = aliases_.find(key); alias != aliases_.end()) return FindStored(alias->second);
  if (ema_unet_ && key.starts_with("model.diffusion_model.")) return FindStored(EmaKey(key));
  return FindStored(key);
}

std::vector<const TensorInfo*> Checkpoint::WithPrefix(const std::string& prefix) const {
  std::vector<const TensorInfo*> out;
  for (const TensorInfo& t : tensors_) {
    if (t.name.starts_with(prefix)) out.push_back(&t);
  }
  return out;
}

bool Checkpoint::HasPrefix(const std::string& prefix) const {
  for (const TensorInfo& t : tensors_) {
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

std::string ShapeText(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ',';
    text += std::to_string(shape[i]);
  }
  return text + "]";
}

}  // namespace sdonnx
