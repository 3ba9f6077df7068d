#include "formats/conversion_id.h"

#include <charconv>
#include <cstring>

#include "util/sha256.h"

namespace sdonnx {
namespace {

// The header's layout: the magic string, then the version as a 4-byte
// little-endian integer, then the id's 32 hex digits, then zeros.
constexpr char kMagic[] = "sdonnx-data\n";
constexpr std::size_t kMagicBytes = sizeof(kMagic) - 1;
constexpr std::size_t kVersionOffset = 16;
constexpr std::size_t kIdOffset = 20;
constexpr std::size_t kIdDigits = 32;

bool IsLowerHex(const std::string& text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

std::string ConversionId(const std::string& source_sha256, const std::string& settings) {
  const std::string text = source_sha256 + "\n" + settings;
  return Sha256Hex(std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()))
      .substr(0, kIdDigits);
}

std::string DataFileHeader(const std::string& id) {
  std::string header(kDataHeaderBytes, '\0');
  std::memcpy(header.data(), kMagic, kMagicBytes);
  for (int i = 0; i < 4; ++i) {
    header[kVersionOffset + i] = static_cast<char>((kDataHeaderVersion >> (8 * i)) & 0xff);
  }
  std::memcpy(header.data() + kIdOffset, id.data(), std::min(id.size(), kIdDigits));
  return header;
}

Result<std::optional<std::string>> ReadDataFileHeader(std::span<const std::uint8_t> bytes,
                                                      const std::string& path) {
  if (bytes.size() < kMagicBytes || std::memcmp(bytes.data(), kMagic, kMagicBytes) != 0) {
    return std::optional<std::string>();
  }
  if (bytes.size() < kDataHeaderBytes) {
    return Status::Error(path + ": the sdonnx data file header is truncated: " +
                         std::to_string(bytes.size()) + " bytes, expected at least " +
                         std::to_string(kDataHeaderBytes) + "; convert the checkpoint again");
  }
  std::uint32_t version = 0;
  for (int i = 0; i < 4; ++i) version |= static_cast<std::uint32_t>(bytes[kVersionOffset + i]) << (8 * i);
  if (version != kDataHeaderVersion) {
    return Status::Error(path + ": sdonnx data file header version " + std::to_string(version) +
                         " is not supported (expected " + std::to_string(kDataHeaderVersion) +
                         "); use the sdonnx version that wrote it or convert again");
  }
  const std::string id(reinterpret_cast<const char*>(bytes.data()) + kIdOffset, kIdDigits);
  if (!IsLowerHex(id)) {
    return Status::Error(path + ": the sdonnx data file header has a malformed conversion id; "
                         "the file is damaged, convert the checkpoint again");
  }
  return std::optional<std::string>(id);
}

Status CheckDataFileMatches(const std::string& model_path,
                            const std::map<std::string, std::string>& metadata,
                            const std::string& data_path, std::span<const std::uint8_t> head,
                            std::uint64_t data_bytes) {
  SDONNX_ASSIGN_OR_RETURN(const std::optional<std::string> data_id,
                          ReadDataFileHeader(head, data_path));
  const auto model_id = metadata.find(kConversionIdKey);
  const std::string again = "; the files come from different conversions, so convert the "
                            "checkpoint again into an empty folder";
  if (model_id == metadata.end()) {
    if (!data_id) return Status::Ok();
    return Status::Error(data_path + ": written by the sdonnx conversion " + *data_id +
                         ", but " + model_path + " names no conversion id" + again);
  }
  if (!data_id) {
    return Status::Error(data_path + ": has no sdonnx data file header, but " + model_path +
                         " expects one from the conversion " + model_id->second + again);
  }
  if (*data_id != model_id->second) {
    return Status::Error(data_path + ": written by the conversion " + *data_id + ", but " +
                         model_path + " is from the conversion " + model_id->second + again);
  }
  const auto length = metadata.find(kExternalDataBytesKey);
  if (length == metadata.end()) return Status::Ok();
  std::uint64_t expected = 0;
  const std::string& text = length->second;
  const auto parsed = std::from_chars(text.data(), text.data() + text.size(), expected);
  if (parsed.ec != std::errc() || parsed.ptr != text.data() + text.size()) {
    return Status::Error(model_path + ": metadata '" + std::string(kExternalDataBytesKey) +
                         "' is '" + text + "', expected a byte count");
  }
  if (data_bytes != expected) {
    return Status::Error(data_path + ": has " + std::to_string(data_bytes) + " bytes, but " +
                         model_path + " expects exactly " + std::to_string(expected) +
                         "; the file is truncated or was changed, so convert the checkpoint "
                         "again");
  }
  return Status::Ok();
}

std::string DescribeConversions(const std::map<std::string, std::vector<std::string>>& files_by_id) {
  std::string text;
  for (const auto& [id, files] : files_by_id) {
    std::string names;
    for (const std::string& file : files) names += (names.empty() ? "" : ", ") + file;
    text += (text.empty() ? "" : "; ") + names + ": " +
            (id.empty() ? std::string("no conversion id") : "conversion " + id);
  }
  return text;
}

}  // namespace sdonnx
