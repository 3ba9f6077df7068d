#include "rebuild/source_record.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>

#include "formats/safetensors.h"

namespace sdonnx {
namespace {

using json = nlohmann::json;

constexpr char kTensorsKey[] = "sdonnx.source_tensors";
constexpr char kMetadataKey[] = "sdonnx.source_metadata";
constexpr char kHeaderKey[] = "sdonnx.source_header";
constexpr char kBytesKey[] = "sdonnx.source_bytes";

// The value of `key`, or "" with *missing set.
const std::string& Required(const std::map<std::string, std::string>& metadata,
                            const std::string& key, bool* missing) {
  static const std::string kEmpty;
  auto it = metadata.find(key);
  if (it == metadata.end()) {
    *missing = true;
    return kEmpty;
  }
  return it->second;
}

bool IsLowercaseHex(const std::string& text, std::size_t length) {
  return text.size() == length && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Returns the algorithm that sdonnx.tensor_digest names, or SHA-256 when the
// entry is absent.
Result<TensorDigest> ParseTensorDigest(const std::string& path,
                                       const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find(kTensorDigestKey);
  if (it == metadata.end()) return TensorDigest::kSha256;
  if (std::optional<TensorDigest> digest = TensorDigestFromName(it->second)) return *digest;
  return Status::Error(path + ": metadata '" + kTensorDigestKey + "' is '" + it->second +
                       "', an unknown tensor digest algorithm; expected '" +
                       std::string(TensorDigestName(TensorDigest::kXxh3_128)) + "' or '" +
                       std::string(TensorDigestName(TensorDigest::kSha256)) +
                       "'. Rebuild with the sdonnx version that wrote the export, or convert "
                       "the checkpoint again");
}

Result<std::vector<SourceTensor>> ParseTensors(const std::string& path, const std::string& text,
                                               TensorDigest digest) {
  const std::size_t digest_length = TensorDigestHexLength(digest);
  std::vector<SourceTensor> tensors;
  const json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_array()) {
    return Status::Error(path + ": metadata '" + kTensorsKey + "' is not a JSON array");
  }
  for (const json& entry : parsed) {
    const bool valid = entry.is_array() && entry.size() == 4 && entry[0].is_string() &&
                       entry[1].is_string() && entry[2].is_array() && entry[3].is_string() &&
                       IsLowercaseHex(entry[3].get<std::string>(), digest_length);
    std::optional<DType> dtype;
    if (valid) dtype = DTypeFromName(entry[1].get<std::string>());
    if (!valid || !dtype) {
      return Status::Error(path + ": metadata '" + kTensorsKey + "' has an invalid entry " +
                           entry.dump() + "; expected [key, dtype, shape, digest] with the " +
                           std::string(TensorDigestLabel(digest)) + " digest as " +
                           std::to_string(digest_length) + " lowercase hex digits");
    }
    SourceTensor tensor;
    tensor.key = entry[0].get<std::string>();
    tensor.dtype = *dtype;
    for (const json& d : entry[2]) {
      if (!d.is_number_integer()) {
        return Status::Error(path + ": tensor '" + tensor.key + "' has a non-integer dimension "
                             "in metadata '" + kTensorsKey + "'");
      }
      tensor.shape.push_back(d.get<std::int64_t>());
    }
    tensor.digest = entry[3].get<std::string>();
    tensors.push_back(std::move(tensor));
  }
  return tensors;
}

}  // namespace

std::string ExtrasFileName(const std::string& stem) {
  return std::string(kExtrasComponent) + "_" + stem + ".safetensors";
}

std::string SafetensorsHeaderText(std::span<const std::uint8_t> bytes) {
  if (bytes.size() < 8) return {};
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | bytes[static_cast<std::size_t>(i)];
  if (length > bytes.size() - 8) return {};
  return std::string(reinterpret_cast<const char*>(bytes.data()) + 8, length);
}

std::string JoinComponents(const std::vector<std::string>& components) {
  std::string text;
  for (const std::string& c : components) text += (text.empty() ? "" : ",") + c;
  return text;
}

std::vector<std::string> SplitComponents(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const std::size_t comma = text.find(',', start);
    const std::size_t end = comma == std::string::npos ? text.size() : comma;
    if (end > start) out.push_back(text.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Result<WrittenFile> WriteExtrasFile(const std::string& path, const Checkpoint& checkpoint,
                                    const std::set<std::string>& used, const SourceRecord& record,
                                    std::map<std::string, std::string> metadata) {
  std::vector<TensorToWrite> extras;
  for (const TensorInfo& t : checkpoint.tensors()) {
    if (used.contains(t.name)) continue;
    // Copied one tensor at a time so that large EMA copies do not stay
    // resident in the memory map.
    extras.push_back({t.name, t.dtype, t.shape, {},
                      [&checkpoint, &t](std::span<std::uint8_t> out) {
                        const std::span<const std::uint8_t> data = checkpoint.Data(t);
                        if (!data.empty()) std::memcpy(out.data(), data.data(), data.size());
                        if (!t.in_memory) checkpoint.mapped().DontNeed(t.offset, t.nbytes);
                      }});
  }
  json tensors = json::array();
  for (const SourceTensor& t : record.tensors) {
    tensors.push_back({t.key, DTypeName(t.dtype), t.shape, t.digest});
  }
  metadata["sdonnx.component"] = kExtrasComponent;
  metadata["sdonnx.components"] = JoinComponents(record.components);
  metadata["sdonnx.source_file"] = record.source_file;
  metadata["sdonnx.source_sha256"] = record.source_sha256;
  metadata["sdonnx.source_format"] = record.source_format;
  metadata[kTensorsKey] = tensors.dump();
  metadata[kTensorDigestKey] = TensorDigestName(record.tensor_digest);
  metadata[kMetadataKey] = json(record.source_metadata).dump();
  if (!record.source_header.empty()) metadata[kHeaderKey] = record.source_header;
  if (record.source_bytes > 0) metadata[kBytesKey] = std::to_string(record.source_bytes);
  SDONNX_RETURN_IF_ERROR(WriteSafetensors(path, extras, metadata));
  std::error_code ec;
  const std::uint64_t size = std::filesystem::file_size(path, ec);
  return WrittenFile{path, ec ? 0 : size};
}

Result<SourceRecord> ParseSourceRecord(const std::string& path,
                                       const std::map<std::string, std::string>& metadata) {
  bool missing = false;
  SourceRecord record;
  record.source_file = Required(metadata, "sdonnx.source_file", &missing);
  record.source_sha256 = Required(metadata, "sdonnx.source_sha256", &missing);
  record.source_format = Required(metadata, "sdonnx.source_format", &missing);
  record.components = SplitComponents(Required(metadata, "sdonnx.components", &missing));
  const std::string& tensors = Required(metadata, kTensorsKey, &missing);
  const std::string& source_metadata = Required(metadata, kMetadataKey, &missing);
  if (missing) {
    return Status::Error(path + ": the extras file lacks part of the source record "
                         "(sdonnx.source_file, sdonnx.source_sha256, sdonnx.source_format, "
                         "sdonnx.components, " + std::string(kTensorsKey) + ", " + kMetadataKey +
                         "); convert the checkpoint again");
  }
  if (record.source_format != "safetensors" && record.source_format != "ckpt") {
    return Status::Error(path + ": metadata 'sdonnx.source_format' is '" + record.source_format +
                         "'; convert writes only 'safetensors' or 'ckpt', so the extras file "
                         "was edited or damaged. Convert the checkpoint again");
  }
  SDONNX_ASSIGN_OR_RETURN(record.tensor_digest, ParseTensorDigest(path, metadata));
  SDONNX_ASSIGN_OR_RETURN(record.tensors, ParseTensors(path, tensors, record.tensor_digest));
  if (auto header = metadata.find(kHeaderKey); header != metadata.end()) {
    record.source_header = header->second;
  }
  if (auto bytes = metadata.find(kBytesKey); bytes != metadata.end()) {
    const std::string& text = bytes->second;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(),
                                           record.source_bytes);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) {
      return Status::Error(path + ": metadata '" + kBytesKey + "' is '" + text +
                           "', expected the source file's size in bytes; the extras file was "
                           "edited or damaged, so convert the checkpoint again");
    }
  }
  const json parsed = json::parse(source_metadata, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_object()) {
    return Status::Error(path + ": metadata '" + kMetadataKey + "' is not a JSON object");
  }
  for (const auto& [key, value] : parsed.items()) {
    if (!value.is_string()) {
      return Status::Error(path + ": metadata '" + kMetadataKey + "' entry '" + key +
                           "' is not a string");
    }
    record.source_metadata[key] = value.get<std::string>();
  }
  return record;
}

}  // namespace sdonnx
