#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "util/atomic_file.h"

namespace sdonnx {
namespace {

using nlohmann::json;

std::uint64_t ReadLe64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Returns the tensor's byte size, or an error if the shape is invalid or its
// size does not fit in 64 bits.
Result<std::uint64_t> ShapeBytes(const std::string& where, const std::vector<std::int64_t>& shape,
                                 DType dtype) {
  std::uint64_t bytes = DTypeSize(dtype);
  for (std::int64_t dim : shape) {
    if (dim < 0) {
      return Status::Error(where + ": negative dimension " + std::to_string(dim) + " in shape");
    }
    const auto d = static_cast<std::uint64_t>(dim);
    if (d != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / d) {
      return Status::Error(where + ": shape is too large; its byte size overflows 64 bits");
    }
    bytes *= d;
  }
  return bytes;
}

Result<TensorInfo> ParseTensorEntry(const std::string& where, const std::string& name,
                                    const json& entry, std::uint64_t data_start) {
  if (!entry.is_object()) return Status::Error(where + ": entry is not a JSON object");
  auto dtype_it = entry.find("dtype");
  auto shape_it = entry.find("shape");
  auto offsets_it = entry.find("data_offsets");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return Status::Error(where + ": missing or non-string \"dtype\"");
  }
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return Status::Error(where + ": missing or non-array \"shape\"");
  }
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
    return Status::Error(where + ": \"data_offsets\" must be an array [begin, end]");
  }
  TensorInfo info;
  info.name = name;
  const std::string dtype_name = dtype_it->get<std::string>();
  auto dtype = DTypeFromName(dtype_name);
  if (!dtype) {
    // safetensors spells the float8 dtypes F8_E4M3 and F8_E5M2. sdonnx reads
    // neither, so the message suggests a copy of the file in a wider dtype.
    const std::string advice =
        dtype_name.starts_with("F8_")
            ? "; float8 weights are not supported: use an F16, BF16 or F32 version of the file"
            : "";
    return Status::Error(where + ": unsupported dtype \"" + dtype_name +
                         "\" (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)" + advice);
  }
  info.dtype = *dtype;
  for (const json& dim : *shape_it) {
    if (!dim.is_number_integer()) return Status::Error(where + ": shape contains a non-integer");
    if (dim.is_number_unsigned() &&
        dim.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)) {
      return Status::Error(where + ": dimension does not fit in int64");
    }
    info.shape.push_back(dim.get<std::int64_t>());
  }
  for (const json& off : *offsets_it) {
    if (!off.is_number_unsigned()) {
      return Status::Error(where + ": data_offsets must be non-negative integers");
    }
  }
  const auto begin = (*offsets_it)[0].get<std::uint64_t>();
  const auto end = (*offsets_it)[1].get<std::uint64_t>();
  if (end < begin) {
    return Status::Error(where + ": data_offsets [" + std::to_string(begin) + ", " +
                         std::to_string(end) + "] are reversed");
  }
  // Absolute offsets are data_start + the relative ones, and that sum must
  // not wrap around to a small offset inside the file.
  if (end > std::numeric_limits<std::uint64_t>::max() - data_start) {
    return Status::Error(where + ": data_offsets [" + std::to_string(begin) + ", " +
                         std::to_string(end) + "] reach past the end of the largest possible "
                         "file; the header is corrupt");
  }
  SDONNX_ASSIGN_OR_RETURN(std::uint64_t expected, ShapeBytes(where, info.shape, info.dtype));
  if (end - begin != expected) {
    return Status::Error(where + ": " + std::string(DTypeName(info.dtype)) + " shape needs " +
                         std::to_string(expected) + " bytes but data_offsets span " +
                         std::to_string(end - begin));
  }
  info.offset = data_start + begin;
  info.nbytes = expected;
  return info;
}

// nlohmann::json keeps the last of duplicate keys silently; this callback
// records top-level duplicates so they can be rejected.
struct DuplicateKeyFinder {
  std::set<std::string> seen;
  std::string duplicate;
  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  }
};

Status CheckRanges(const std::string& path, std::vector<TensorInfo>* tensors,
                   std::uint64_t data_start, std::uint64_t file_size,
                   std::vector<std::string>* warnings) {
  std::sort(tensors->begin(), tensors->end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.offset < b.offset; });
  std::uint64_t cursor = data_start;
  std::uint64_t gaps = 0;
  for (std::size_t i = 0; i < tensors->size(); ++i) {
    const TensorInfo& t = (*tensors)[i];
    if (t.offset + t.nbytes > file_size) {
      return Status::Error(path + ": tensor '" + t.name + "' ends at byte " +
                           std::to_string(t.offset + t.nbytes) + " but the file has " +
                           std::to_string(file_size) + " bytes; the file is truncated");
    }
    if (t.offset < cursor && t.nbytes > 0) {
      return Status::Error(path + ": tensor '" + t.name + "' at byte " + std::to_string(t.offset) +
                           " overlaps '" + (*tensors)[i - 1].name + "', which ends at byte " +
                           std::to_string(cursor));
    }
    if (t.offset > cursor) gaps += t.offset - cursor;
    cursor = std::max(cursor, t.offset + t.nbytes);
  }
  if (gaps > 0) {
    warnings->push_back(path + ": " + std::to_string(gaps) +
                        " bytes between tensors belong to no tensor");
  }
  if (cursor < file_size) {
    warnings->push_back(path + ": " + std::to_string(file_size - cursor) +
                        " trailing bytes after the last tensor, starting at byte " +
                        std::to_string(cursor));
  }
  return Status::Ok();
}

}  // namespace

std::int64_t TensorInfo::NumElements() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

Status ParseSafetensorsHeader(const std::string& path, std::span<const std::uint8_t> bytes,
                              std::vector<TensorInfo>* tensors,
                              std::map<std::string, std::string>* metadata,
                              std::vector<std::string>* warnings) {
  if (bytes.size() < 8) {
    return Status::Error(path + ": " + std::to_string(bytes.size()) +
                         " bytes is too short for a safetensors file (needs an 8-byte header "
                         "length); the file is empty or truncated");
  }
  const std::uint64_t header_len = ReadLe64(bytes.data());
  if (header_len > kMaxHeaderBytes) {
    return Status::Error(path + ": header length " + std::to_string(header_len) +
                         " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
                         " bytes; this is not a safetensors file, or it is corrupt");
  }
  if (header_len > bytes.size() - 8) {
    return Status::Error(path + ": header length " + std::to_string(header_len) +
                         " reaches past the end of the " + std::to_string(bytes.size()) +
                         "-byte file; the file is truncated or not safetensors");
  }
  const char* text = reinterpret_cast<const char*>(bytes.data() + 8);
  if (header_len == 0 || text[0] != '{') {
    return Status::Error(path + ": header does not start with '{'; this is not a safetensors "
                         "file (for .ckpt files, use a PyTorch checkpoint reader)");
  }
  DuplicateKeyFinder finder;
  json header = json::parse(text, text + header_len, std::ref(finder), /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Status::Error(path + ": header is not a valid JSON object (bytes 8 to " +
                         std::to_string(8 + header_len) + ")");
  }
  if (!finder.duplicate.empty()) {
    return Status::Error(path + ": tensor name '" + finder.duplicate +
                         "' appears twice in the header");
  }
  const std::uint64_t data_start = 8 + header_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Status::Error(path + ": __metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return Status::Error(path + ": __metadata__ value '" + m.key() + "' is not a string");
        }
        (*metadata)[m.key()] = m->get<std::string>();
      }
      continue;
    }
    SDONNX_ASSIGN_OR_RETURN(
        TensorInfo info, ParseTensorEntry(path + ": tensor '" + it.key() + "'", it.key(), *it,
                                          data_start));
    tensors->push_back(std::move(info));
  }
  return CheckRanges(path, tensors, data_start, bytes.size(), warnings);
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  SDONNX_RETURN_IF_ERROR(ParseSafetensorsHeader(path, mapped->bytes(), &file->tensors_,
                                                &file->metadata_, &file->warnings_));
  file->file_ = std::move(mapped);
  for (std::size_t i = 0; i < file->tensors_.size(); ++i) {
    file->index_[file->tensors_[i].name] = i;
  }
  return file;
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::uint8_t> SafetensorsFile::Data(const TensorInfo& tensor) const {
  return file_->bytes().subspan(tensor.offset, tensor.nbytes);
}

namespace {

// Writes the file to an AtomicFile without committing it; with `hash` the
// file's SHA-256 is computed as it is written.
Result<AtomicFile> WriteUncommitted(const std::string& path,
                                    const std::vector<TensorToWrite>& tensors,
                                    const std::map<std::string, std::string>& metadata, bool hash,
                                    bool overwrite) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    SDONNX_ASSIGN_OR_RETURN(std::uint64_t nbytes, ShapeBytes(t.name, t.shape, t.dtype));
    if (!t.data.empty() && t.data.size() != nbytes) {
      return Status::Error(path + ": tensor '" + t.name + "' has " +
                           std::to_string(t.data.size()) + " bytes of data, shape needs " +
                           std::to_string(nbytes));
    }
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<std::uint8_t>(text.size() >> (8 * i));

  SDONNX_ASSIGN_OR_RETURN(AtomicFile out, AtomicFile::Create(path, overwrite));
  if (hash) SDONNX_RETURN_IF_ERROR(out.HashContents());
  SDONNX_RETURN_IF_ERROR(out.Write(std::span<const std::uint8_t>(length, 8)));
  SDONNX_RETURN_IF_ERROR(out.Write(text));
  const std::uint64_t data_start = out.bytes_written();
  std::vector<std::uint8_t> buffer;
  for (const TensorToWrite& t : tensors) {
    if (t.data.empty() && !t.generate) continue;
    const auto& offsets = header[t.name]["data_offsets"];
    const std::uint64_t at = data_start + offsets[0].get<std::uint64_t>();
    if (at > out.bytes_written()) SDONNX_RETURN_IF_ERROR(out.ExtendTo(at));
    if (!t.data.empty()) {
      SDONNX_RETURN_IF_ERROR(out.Write(t.data));
      continue;
    }
    buffer.resize(offsets[1].get<std::uint64_t>() - offsets[0].get<std::uint64_t>());
    t.generate(buffer);
    SDONNX_RETURN_IF_ERROR(out.Write(buffer));
  }
  if (data_start + offset > out.bytes_written()) {
    SDONNX_RETURN_IF_ERROR(out.ExtendTo(data_start + offset));
  }
  return out;
}

}  // namespace

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata, bool overwrite) {
  SDONNX_ASSIGN_OR_RETURN(AtomicFile out,
                          WriteUncommitted(path, tensors, metadata, false, overwrite));
  return out.Commit();
}

Result<AtomicFile> WriteHashedSafetensors(const std::string& path,
                                          const std::vector<TensorToWrite>& tensors,
                                          const std::map<std::string, std::string>& metadata,
                                          bool overwrite) {
  return WriteUncommitted(path, tensors, metadata, true, overwrite);
}

}  // namespace sdonnx
