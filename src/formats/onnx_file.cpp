#include "formats/onnx_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <vector>

#include "formats/conversion_id.h"
#include "formats/protobuf_wire.h"

namespace sdonnx {
namespace {

namespace fs = std::filesystem;

// Field numbers in onnx.proto: ModelProto.graph, GraphProto.initializer and
// TensorProto.raw_data.
constexpr std::uint32_t kModelGraphField = 7;
constexpr std::uint32_t kGraphInitializerField = 5;
constexpr std::uint32_t kTensorRawDataField = 9;

std::string DimsText(const std::vector<std::int64_t>& dims) {
  std::string text = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(dims[i]);
  }
  return text + "]";
}

Result<std::uint64_t> ParseUnsigned(const std::string& text, const std::string& label) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) {
    return Status::Error(label + " is '" + text + "', expected a non-negative integer");
  }
  return value;
}

// Element count times element size, or an error on negative dims or overflow.
Result<std::uint64_t> ExpectedBytes(const std::vector<std::int64_t>& dims, DType dtype,
                                    const std::string& label) {
  std::uint64_t count = 1;
  for (std::int64_t d : dims) {
    if (d < 0) return Status::Error(label + " has a negative dimension in " + DimsText(dims));
    if (d != 0 && count > UINT64_MAX / 16 / static_cast<std::uint64_t>(d)) {
      return Status::Error(label + " has dims " + DimsText(dims) + " whose size overflows");
    }
    count *= static_cast<std::uint64_t>(d);
  }
  return count * DTypeSize(dtype);
}

// Copies `values` into bytes, keeping the low `size` bytes of each element
// (ONNX stores float16, bfloat16 and the small integers in int32_data).
template <typename T>
std::vector<std::uint8_t> PackValues(const google::protobuf::RepeatedField<T>& values,
                                     std::size_t size) {
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(values.size()) * size);
  for (int i = 0; i < values.size(); ++i) {
    const T value = values.Get(i);
    std::memcpy(bytes.data() + static_cast<std::size_t>(i) * size, &value, size);
  }
  return bytes;
}

std::vector<std::uint8_t> TypedFieldBytes(const onnx::TensorProto& tensor, DType dtype) {
  const std::size_t size = DTypeSize(dtype);
  switch (dtype) {
    case DType::kF32: return PackValues(tensor.float_data(), size);
    case DType::kF64: return PackValues(tensor.double_data(), size);
    case DType::kI64: return PackValues(tensor.int64_data(), size);
    default: return PackValues(tensor.int32_data(), size);
  }
}

bool HasTypedFields(const onnx::TensorProto& tensor) {
  return tensor.float_data_size() > 0 || tensor.double_data_size() > 0 ||
         tensor.int64_data_size() > 0 || tensor.int32_data_size() > 0 ||
         tensor.uint64_data_size() > 0 || tensor.string_data_size() > 0;
}

// Advice for a folder given where one ONNX file is expected: its .onnx
// files, up to three of them.
std::string OnnxFilesIn(const std::string& folder) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(folder, ec)) {
    if (entry.path().extension() == ".onnx") names.push_back(entry.path().filename().string());
  }
  if (names.empty()) return "pass an .onnx file";
  std::sort(names.begin(), names.end());
  std::string list;
  for (std::size_t i = 0; i < std::min<std::size_t>(names.size(), 3); ++i) {
    list += (i > 0 ? ", " : "") + names[i];
  }
  if (names.size() > 3) list += ", ...";
  return "pass one of its .onnx files (" + list + ")";
}

}  // namespace

Status CheckExternalDataLocation(const std::string& model_dir, const std::string& location,
                                 bool must_exist, const std::string& label) {
  const std::string prefix = label + ": external data location '" + location + "' ";
  if (location.empty()) return Status::Error(prefix + "is empty; expected a file name");
  const fs::path relative(location);
  if (relative.is_absolute() || location.front() == '/') {
    return Status::Error(prefix + "is an absolute path; ONNX allows only a path relative to "
                         "the model's folder");
  }
  for (const fs::path& part : relative) {
    if (part == "..") {
      return Status::Error(prefix + "contains a '..' component; ONNX allows only a path "
                           "inside the model's folder");
    }
  }
  fs::path current(model_dir.empty() ? "." : model_dir);
  for (const fs::path& part : relative) {
    current /= part;
    struct stat info {};
    if (::lstat(current.c_str(), &info) != 0) {
      if (!must_exist && errno == ENOENT) return Status::Ok();
      return Status::Error(prefix + "cannot be read: " + current.string() + ": " +
                           std::strerror(errno) + "; the data file must sit beside the model");
    }
    if (S_ISLNK(info.st_mode)) {
      return Status::Error(prefix + "passes through the symlink " + current.string() +
                           "; external data must be a regular file, not a link");
    }
  }
  struct stat info {};
  if (::lstat(current.c_str(), &info) == 0 && !S_ISREG(info.st_mode)) {
    return Status::Error(prefix + "is not a regular file: " + current.string());
  }
  return Status::Ok();
}

Result<std::unique_ptr<OnnxFile>> OnnxFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // See mapped_file.cpp.
  if (fd < 0) return Status::Error(path + ": cannot open for reading: " + std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    if (S_ISDIR(info.st_mode)) return Status::Error(path + ": is a folder; " + OnnxFilesIn(path));
    return Status::Error(path + ": not a regular file");
  }
  if (static_cast<std::uint64_t>(info.st_size) > kMaxOnnxModelBytes) {
    ::close(fd);
    return Status::Error(path + ": " + std::to_string(info.st_size) +
                         " bytes is past protobuf's 2 GiB message limit; a model this large "
                         "must store its weights as external data");
  }

  ::close(fd);

  auto file = std::unique_ptr<OnnxFile>(new OnnxFile());
  file->path_ = path;
  file->dir_ = fs::path(path).parent_path().string();
  SDONNX_ASSIGN_OR_RETURN(file->model_file_, MappedFile::Open(path));
  std::string without_raw_data;
  const bool parsed = file->CopyWithoutRawData(&without_raw_data) &&
                      file->model_.ParseFromString(without_raw_data);
  if (!parsed) {
    return Status::Error(path + ": not a valid ONNX ModelProto (the protobuf is truncated or "
                         "damaged); re-export or re-copy the file");
  }
  if (!file->model_.has_graph()) {
    return Status::Error(path + ": the ONNX model has no graph; the file is truncated or not a "
                         "model");
  }

  for (const auto& prop : file->model_.metadata_props()) file->metadata_[prop.key()] = prop.value();
  const auto& graph = file->model_.graph();
  if (graph.sparse_initializer_size() > 0) {
    return Status::Error(path + ": has " + std::to_string(graph.sparse_initializer_size()) +
                         " sparse initializers, which are not supported");
  }
  for (int i = 0; i < graph.initializer_size(); ++i) {
    SDONNX_RETURN_IF_ERROR(file->LoadInitializer(graph.initializer(i), file->initializers_.size())
                               .WithContext(path));
  }
  // After the per-initializer range checks, so that a truncated data file
  // is reported with the initializer and the bytes it needs.
  for (const auto& [location, data] : file->data_files_) {
    SDONNX_RETURN_IF_ERROR(
        CheckDataFileMatches(path, file->metadata_, data->path(), data->bytes(), data->size()));
  }
  return file;
}

bool OnnxFile::CopyWithoutRawData(std::string* out) {
  const std::span<const std::uint8_t> bytes = model_file_->bytes();
  wire::Reader model(bytes);
  wire::Field field;
  while (!model.done()) {
    if (!model.Next(&field)) return false;
    if (field.number != kModelGraphField || field.type != wire::kLengthDelimited) {
      out->append(reinterpret_cast<const char*>(field.encoded.data()), field.encoded.size());
      continue;
    }
    std::string graph;
    wire::Reader graph_reader(field.payload);
    wire::Field graph_field;
    while (!graph_reader.done()) {
      if (!graph_reader.Next(&graph_field)) return false;
      if (graph_field.number != kGraphInitializerField ||
          graph_field.type != wire::kLengthDelimited) {
        graph.append(reinterpret_cast<const char*>(graph_field.encoded.data()),
                     graph_field.encoded.size());
        continue;
      }
      // The tensor without raw_data; as protobuf does, the last raw_data
      // field of a tensor wins.
      std::string tensor;
      std::optional<RawDataSpan> raw_data;
      wire::Reader tensor_reader(graph_field.payload);
      wire::Field tensor_field;
      while (!tensor_reader.done()) {
        if (!tensor_reader.Next(&tensor_field)) return false;
        if (tensor_field.number == kTensorRawDataField &&
            tensor_field.type == wire::kLengthDelimited) {
          raw_data = RawDataSpan{static_cast<std::uint64_t>(tensor_field.payload.data() -
                                                            bytes.data()),
                                 tensor_field.payload.size()};
          continue;
        }
        tensor.append(reinterpret_cast<const char*>(tensor_field.encoded.data()),
                      tensor_field.encoded.size());
      }
      raw_data_.push_back(raw_data);
      wire::AppendLengthDelimited(
          kGraphInitializerField,
          {reinterpret_cast<const std::uint8_t*>(tensor.data()), tensor.size()}, &graph);
    }
    wire::AppendLengthDelimited(
        kModelGraphField, {reinterpret_cast<const std::uint8_t*>(graph.data()), graph.size()},
        out);
  }
  return true;
}

Status OnnxFile::LoadInitializer(const onnx::TensorProto& tensor, std::size_t index) {
  OnnxInitializer init;
  init.name = tensor.name();
  const std::string label = "initializer '" + init.name + "'";
  if (init.name.empty()) return Status::Error("an initializer has no name");
  if (index_.contains(init.name)) {
    return Status::Error(label + " occurs twice; initializer names must be unique");
  }
  std::optional<DType> dtype = DTypeFromOnnx(tensor.data_type());
  if (!dtype) {
    return Status::Error(label + " has ONNX data type " + std::to_string(tensor.data_type()) +
                         ", which has no safetensors equivalent");
  }
  init.dtype = *dtype;
  init.dims.assign(tensor.dims().begin(), tensor.dims().end());
  SDONNX_ASSIGN_OR_RETURN(init.nbytes, ExpectedBytes(init.dims, init.dtype, label));

  if (tensor.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) {
    init.storage = InitializerStorage::kExternal;
    SDONNX_RETURN_IF_ERROR(LoadExternal(tensor, &init));
  } else if (index < raw_data_.size() && raw_data_[index]) {
    init.storage = InitializerStorage::kRawData;
    init.offset = raw_data_[index]->offset;
    if (raw_data_[index]->size != init.nbytes) {
      return Status::Error(label + " has " + std::to_string(raw_data_[index]->size) +
                           " bytes of raw_data, but dims " + DimsText(init.dims) + " of " +
                           std::string(DTypeName(init.dtype)) + " need " +
                           std::to_string(init.nbytes));
    }
  } else {
    init.storage = InitializerStorage::kTypedFields;
    std::vector<std::uint8_t> bytes = TypedFieldBytes(tensor, init.dtype);
    if (bytes.size() != init.nbytes || (bytes.empty() && HasTypedFields(tensor))) {
      return Status::Error(label + " contains " + std::to_string(bytes.size()) +
                           " bytes in its typed data field, but dims " + DimsText(init.dims) +
                           " of " + std::string(DTypeName(init.dtype)) + " need " +
                           std::to_string(init.nbytes));
    }
    converted_[index] = std::move(bytes);
  }
  index_[init.name] = index;
  initializers_.push_back(std::move(init));
  return Status::Ok();
}

Status OnnxFile::LoadExternal(const onnx::TensorProto& tensor, OnnxInitializer* init) {
  const std::string label = "initializer '" + init->name + "'";
  std::optional<std::uint64_t> length;
  for (const auto& entry : tensor.external_data()) {
    if (entry.key() == "location") {
      init->location = entry.value();
    } else if (entry.key() == "offset") {
      SDONNX_ASSIGN_OR_RETURN(init->offset, ParseUnsigned(entry.value(), label + ": offset"));
    } else if (entry.key() == "length") {
      SDONNX_ASSIGN_OR_RETURN(length, ParseUnsigned(entry.value(), label + ": length"));
    }
  }
  if (length && *length != init->nbytes) {
    return Status::Error(label + ": external data length is " + std::to_string(*length) +
                         " bytes, but dims " + DimsText(init->dims) + " of " +
                         std::string(DTypeName(init->dtype)) + " need " +
                         std::to_string(init->nbytes));
  }
  SDONNX_RETURN_IF_ERROR(CheckExternalDataLocation(dir_, init->location, true, label));
  SDONNX_ASSIGN_OR_RETURN(const MappedFile* data, MapDataFile(init->location));
  if (init->offset > data->size() || init->nbytes > data->size() - init->offset) {
    return Status::Error(label + ": needs bytes [" + std::to_string(init->offset) + ", " +
                         std::to_string(init->offset + init->nbytes) + ") of " + data->path() +
                         ", which has only " + std::to_string(data->size()) +
                         " bytes; the data file is truncated or belongs to another model");
  }
  return Status::Ok();
}

Result<const MappedFile*> OnnxFile::MapDataFile(const std::string& location) {
  auto found = data_files_.find(location);
  if (found != data_files_.end()) return found->second.get();
  const std::string data_path = (fs::path(dir_.empty() ? "." : dir_) / location).string();
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(data_path));
  const MappedFile* result = mapped.get();
  data_files_[location] = std::move(mapped);
  return result;
}

const OnnxInitializer* OnnxFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &initializers_[it->second];
}

std::span<const std::uint8_t> OnnxFile::Data(const OnnxInitializer& init) const {
  const std::size_t index = index_.at(init.name);
  switch (init.storage) {
    case InitializerStorage::kRawData:
      return model_file_->bytes().subspan(init.offset, init.nbytes);
    case InitializerStorage::kTypedFields:
      return converted_.at(index);
    case InitializerStorage::kExternal:
      return data_files_.at(init.location)->bytes().subspan(init.offset, init.nbytes);
  }
  return {};
}

void OnnxFile::ReleasePages(const OnnxInitializer& init) const {
  if (init.storage == InitializerStorage::kRawData) model_file_->DontNeed(init.offset, init.nbytes);
  if (init.storage != InitializerStorage::kExternal) return;
  data_files_.at(init.location)->DontNeed(init.offset, init.nbytes);
}

std::string OnnxFile::MetadataValue(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? std::string() : it->second;
}

std::uint64_t OnnxFile::weight_bytes() const {
  std::uint64_t total = 0;
  for (const OnnxInitializer& init : initializers_) total += init.nbytes;
  return total;
}

}  // namespace sdonnx
