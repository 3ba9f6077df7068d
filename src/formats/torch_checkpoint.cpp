#include "formats/torch_checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <unordered_map>

#include "formats/pickle.h"

namespace sdonnx {
namespace {

using pickle::Value;
using pickle::ValuePtr;

constexpr std::uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr std::uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr std::uint32_t kEndOfCentralDirSignature = 0x06054b50;
constexpr std::uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr std::uint32_t kZip64EndSignature = 0x06064b50;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kEndOfCentralDirSize = 22;
constexpr std::size_t kZip64LocatorSize = 20;
constexpr std::size_t kZip64EndSize = 56;

// The pickled int 0x1950a86a20f9469cfc6c that starts a legacy checkpoint:
// PROTO 2, LONG1 with 10 bytes, then the bytes little-endian.
constexpr std::uint8_t kLegacyMagicPickle[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                               0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
constexpr std::int64_t kLegacyProtocolVersion = 1001;

std::uint64_t ReadLe(const std::uint8_t* p, int width) {
  std::uint64_t value = 0;
  for (int i = width - 1; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

// A stored zip record: its data is [offset, offset + size) of the file.
struct ZipRecord {
  std::string name;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

struct Zip64Fields {
  std::uint64_t entries = 0;
  std::uint64_t directory_size = 0;
  std::uint64_t directory_offset = 0;
};

// Reads the zip64 end of central directory record that the locator just
// before the classic record points to.
// NOTE: the zip64 paths (this record and the extra field) have no test, because
// no fixture is over 4 GiB and the tests build no zip64 archive.
Result<Zip64Fields> ReadZip64End(const std::string& path, std::span<const std::uint8_t> bytes,
                                 std::size_t locator) {
  const std::uint8_t* loc = bytes.data() + locator;
  if (ReadLe(loc + 4, 4) != 0 || ReadLe(loc + 16, 4) > 1) {
    return Status::Error(path + ": zip spans several disks, which is not supported");
  }
  const std::uint64_t end = ReadLe(loc + 8, 8);
  if (end > bytes.size() || bytes.size() - end < kZip64EndSize ||
      ReadLe(bytes.data() + end, 4) != kZip64EndSignature) {
    return Status::Error(path + ": zip64 end of central directory record at byte " +
                         std::to_string(end) + " is missing or truncated");
  }
  const std::uint8_t* rec = bytes.data() + end;
  Zip64Fields fields;
  fields.entries = ReadLe(rec + 32, 8);
  fields.directory_size = ReadLe(rec + 40, 8);
  fields.directory_offset = ReadLe(rec + 48, 8);
  return fields;
}

// Replaces the 32-bit size and offset fields that hold 0xFFFFFFFF with the
// values of the zip64 extra field (header id 1), which lists them in the
// order uncompressed size, compressed size, local header offset.
Status ApplyZip64Extra(const std::string& where, std::span<const std::uint8_t> extra,
                       std::uint64_t* uncompressed, std::uint64_t* compressed,
                       std::uint64_t* local_offset) {
  std::size_t pos = 0;
  while (pos + 4 <= extra.size()) {
    const std::uint64_t id = ReadLe(extra.data() + pos, 2);
    const std::uint64_t length = ReadLe(extra.data() + pos + 2, 2);
    if (pos + 4 + length > extra.size()) break;
    if (id == 1) {
      std::size_t field = pos + 4;
      const std::size_t field_end = pos + 4 + length;
      for (std::uint64_t* value : {uncompressed, compressed, local_offset}) {
        if (*value != 0xFFFFFFFFu) continue;
        if (field + 8 > field_end) {
          return Status::Error(where + ": zip64 extra field is too short for its sizes");
        }
        *value = ReadLe(extra.data() + field, 8);
        field += 8;
      }
      return Status::Ok();
    }
    pos += 4 + length;
  }
  if (*uncompressed == 0xFFFFFFFFu || *compressed == 0xFFFFFFFFu ||
      *local_offset == 0xFFFFFFFFu) {
    return Status::Error(where + ": record needs a zip64 extra field but has none");
  }
  return Status::Ok();
}

Status CheckRecordName(const std::string& path, const std::string& name) {
  bool bad = name.empty() || name.front() == '/' || name.find('\\') != std::string::npos;
  std::size_t start = 0;
  while (!bad && start <= name.size()) {
    const std::size_t slash = std::min(name.find('/', start), name.size());
    if (name.compare(start, slash - start, "..") == 0) bad = true;
    start = slash + 1;
  }
  if (bad) {
    return Status::Error(path + ": zip record name '" + name +
                         "' is absolute or contains '..'; the archive is not a torch checkpoint");
  }
  return Status::Ok();
}

// Reads one central directory entry at `pos`, advances `pos` past it and
// resolves where the record's data lies through its local header.
Result<ZipRecord> ReadCentralEntry(const std::string& path, std::span<const std::uint8_t> bytes,
                                   std::uint64_t directory_end, std::uint64_t* pos) {
  const std::string at = path + ": zip central directory entry at byte " + std::to_string(*pos);
  if (directory_end - *pos < kCentralHeaderSize ||
      ReadLe(bytes.data() + *pos, 4) != kCentralHeaderSignature) {
    return Status::Error(at + " is missing or truncated");
  }
  const std::uint8_t* h = bytes.data() + *pos;
  const std::uint64_t flags = ReadLe(h + 8, 2);
  const std::uint64_t method = ReadLe(h + 10, 2);
  std::uint64_t compressed = ReadLe(h + 20, 4);
  std::uint64_t uncompressed = ReadLe(h + 24, 4);
  const std::uint64_t name_length = ReadLe(h + 28, 2);
  const std::uint64_t extra_length = ReadLe(h + 30, 2);
  const std::uint64_t comment_length = ReadLe(h + 32, 2);
  std::uint64_t local_offset = ReadLe(h + 42, 4);
  const std::uint64_t entry_size = kCentralHeaderSize + name_length + extra_length + comment_length;
  if (directory_end - *pos < entry_size) return Status::Error(at + " is truncated");

  ZipRecord record;
  record.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_length);
  const std::string where = path + ": zip record '" + record.name + "'";
  SDONNX_RETURN_IF_ERROR(CheckRecordName(path, record.name));
  if (flags & 1) return Status::Error(where + " is encrypted, which is not supported");
  if (method != 0) {
    return Status::Error(where + " is compressed (method " + std::to_string(method) +
                         "); only stored records are supported, and torch.save writes no others");
  }
  SDONNX_RETURN_IF_ERROR(ApplyZip64Extra(
      where, bytes.subspan(*pos + kCentralHeaderSize + name_length, extra_length), &uncompressed,
      &compressed, &local_offset));
  if (compressed != uncompressed) {
    return Status::Error(where + " is stored but its compressed size " +
                         std::to_string(compressed) + " differs from its size " +
                         std::to_string(uncompressed));
  }
  *pos += entry_size;

  if (local_offset > bytes.size() || bytes.size() - local_offset < kLocalHeaderSize ||
      ReadLe(bytes.data() + local_offset, 4) != kLocalHeaderSignature) {
    return Status::Error(where + ": local header at byte " + std::to_string(local_offset) +
                         " is missing or past the end of the file");
  }
  const std::uint8_t* local = bytes.data() + local_offset;
  record.offset = local_offset + kLocalHeaderSize + ReadLe(local + 26, 2) + ReadLe(local + 28, 2);
  record.size = uncompressed;
  if (record.offset > bytes.size() || bytes.size() - record.offset < record.size) {
    return Status::Error(where + " of " + std::to_string(record.size) + " bytes at byte " +
                         std::to_string(record.offset) + " reaches past the end of the " +
                         std::to_string(bytes.size()) + "-byte file; the file is truncated");
  }
  return record;
}

// Reads the central directory of a zip archive of stored records.
Result<std::vector<ZipRecord>> ReadZipDirectory(const std::string& path,
                                                std::span<const std::uint8_t> bytes) {
  // The end of central directory record is the last 22 bytes, unless a
  // comment of up to 65535 bytes follows it.
  std::optional<std::size_t> end;
  if (bytes.size() >= kEndOfCentralDirSize) {
    const std::size_t lowest =
        bytes.size() - kEndOfCentralDirSize - std::min<std::size_t>(bytes.size() - kEndOfCentralDirSize, 0xFFFF);
    for (std::size_t pos = bytes.size() - kEndOfCentralDirSize + 1; pos-- > lowest;) {
      if (ReadLe(bytes.data() + pos, 4) == kEndOfCentralDirSignature) {
        end = pos;
        break;
      }
    }
  }
  if (!end) {
    return Status::Error(path + ": no zip end of central directory record found; the file is "
                         "truncated or not a zip checkpoint");
  }
  const std::uint8_t* eocd = bytes.data() + *end;
  if (ReadLe(eocd + 4, 2) != 0 || ReadLe(eocd + 6, 2) != 0) {
    return Status::Error(path + ": zip spans several disks, which is not supported");
  }
  std::uint64_t entries = ReadLe(eocd + 10, 2);
  std::uint64_t directory_size = ReadLe(eocd + 12, 4);
  std::uint64_t directory_offset = ReadLe(eocd + 16, 4);
  if (*end >= kZip64LocatorSize &&
      ReadLe(bytes.data() + *end - kZip64LocatorSize, 4) == kZip64LocatorSignature) {
    SDONNX_ASSIGN_OR_RETURN(Zip64Fields zip64,
                            ReadZip64End(path, bytes, *end - kZip64LocatorSize));
    entries = zip64.entries;
    directory_size = zip64.directory_size;
    directory_offset = zip64.directory_offset;
  }
  if (directory_offset > bytes.size() || bytes.size() - directory_offset < directory_size) {
    return Status::Error(path + ": zip central directory of " + std::to_string(directory_size) +
                         " bytes at byte " + std::to_string(directory_offset) +
                         " reaches past the end of the file; the file is truncated");
  }
  // Each entry takes at least kCentralHeaderSize bytes, which bounds the count.
  if (entries > directory_size / kCentralHeaderSize) {
    return Status::Error(path + ": zip declares " + std::to_string(entries) +
                         " records but its central directory has room for fewer");
  }

  std::vector<ZipRecord> records;
  std::set<std::string> names;
  std::uint64_t pos = directory_offset;
  for (std::uint64_t i = 0; i < entries; ++i) {
    SDONNX_ASSIGN_OR_RETURN(ZipRecord record,
                            ReadCentralEntry(path, bytes, directory_offset + directory_size, &pos));
    if (!names.insert(record.name).second) {
      return Status::Error(path + ": zip record '" + record.name + "' appears twice");
    }
    records.push_back(std::move(record));
  }
  return records;
}

// A storage as a persistent id names it, with where its bytes are.
struct Storage {
  std::string key;
  DType dtype = DType::kF32;
  std::uint64_t numel = 0;
  std::uint64_t file_offset = 0;
};

std::optional<DType> StorageDType(const std::string& name) {
  static const std::map<std::string, DType> kTypes = {
      {"FloatStorage", DType::kF32}, {"HalfStorage", DType::kF16},
      {"BFloat16Storage", DType::kBF16}, {"DoubleStorage", DType::kF64},
      {"LongStorage", DType::kI64}, {"IntStorage", DType::kI32},
      {"ShortStorage", DType::kI16}, {"CharStorage", DType::kI8},
      {"ByteStorage", DType::kU8}, {"BoolStorage", DType::kBool},
  };
  auto it = kTypes.find(name);
  if (it == kTypes.end()) return std::nullopt;
  return it->second;
}

// Parses a storage persistent id: ('storage', torch.XStorage, key, location,
// numel), with a sixth item view_metadata (always None) in legacy files.
Result<Storage> ParseStorageId(const std::string& where, const Value& persistent) {
  const Value& id = *persistent.items.at(0);
  const bool shape_ok = id.kind == Value::Kind::kTuple && (id.items.size() == 5 || id.items.size() == 6);
  if (!shape_ok || id.items[0]->kind != Value::Kind::kString || id.items[0]->text != "storage") {
    return Status::Error(where + ": persistent id is not a ('storage', type, key, location, "
                         "numel) tuple");
  }
  const Value& type = *id.items[1];
  const Value& key = *id.items[2];
  const Value& numel = *id.items[4];
  std::optional<DType> dtype;
  if (type.kind == Value::Kind::kGlobal && type.text == "torch") dtype = StorageDType(type.name);
  if (!dtype) return Status::Error(where + ": persistent id has no torch storage type");
  if (key.kind != Value::Kind::kString) {
    return Status::Error(where + ": storage key is a " + std::string(pickle::KindName(key.kind)) +
                         ", not a string");
  }
  if (numel.kind != Value::Kind::kInt || numel.integer < 0) {
    return Status::Error(where + ": storage '" + key.text + "' has an invalid element count");
  }
  if (id.items.size() == 6 && id.items[5]->kind != Value::Kind::kNone) {
    return Status::Error(where + ": storage '" + key.text +
                         "' is a view of another storage (view_metadata), which is not supported");
  }
  Storage storage;
  storage.key = key.text;
  storage.dtype = *dtype;
  storage.numel = static_cast<std::uint64_t>(numel.integer);
  return storage;
}

std::string FormatDims(const std::vector<std::int64_t>& dims) {
  std::string out = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(dims[i]);
  }
  return out + "]";
}

// Copies the elements of a strided view out in row-major order.
void CopyStrided(const std::uint8_t* storage, std::size_t element_size, std::int64_t offset,
                 const std::vector<std::int64_t>& size, const std::vector<std::int64_t>& stride,
                 std::uint64_t numel, std::vector<std::uint8_t>* out) {
  out->resize(numel * element_size);
  std::vector<std::int64_t> index(size.size(), 0);
  std::int64_t element = offset;
  for (std::uint64_t n = 0; n < numel; ++n) {
    std::copy_n(storage + element * element_size, element_size, out->data() + n * element_size);
    // Advance the multi-index like an odometer, last dimension fastest.
    for (std::size_t d = size.size(); d-- > 0;) {
      if (++index[d] < size[d]) {
        element += stride[d];
        break;
      }
      element -= stride[d] * (size[d] - 1);
      index[d] = 0;
    }
  }
}

// Builds the tensor `name` from its _rebuild_tensor_v2 arguments, checking
// that the view stays inside its storage.
Result<TorchTensor> BuildTensor(const std::string& path, const std::string& name,
                                const pickle::TensorArgs& args, const Storage& storage,
                                std::span<const std::uint8_t> file) {
  const std::string where = path + ": tensor '" + name + "'";
  const std::size_t element_size = DTypeSize(storage.dtype);
  TorchTensor tensor;
  tensor.name = name;
  tensor.dtype = storage.dtype;
  tensor.shape = args.size;

  if (args.storage_offset < 0) return Status::Error(where + " has a negative storage offset");
  // Every product and sum below stays under the storage's element count, so
  // checking against it before each step rules out overflow.
  const auto offset = static_cast<std::uint64_t>(args.storage_offset);
  std::uint64_t numel = 1;
  std::uint64_t last = offset;  // Index of the last element the view reads.
  bool out_of_range = offset > storage.numel;
  for (std::size_t d = 0; d < args.size.size(); ++d) {
    if (args.size[d] < 0 || args.stride[d] < 0) {
      return Status::Error(where + " has a negative size or stride: size " +
                           FormatDims(args.size) + ", stride " + FormatDims(args.stride));
    }
    const auto dim = static_cast<std::uint64_t>(args.size[d]);
    const auto step = static_cast<std::uint64_t>(args.stride[d]);
    if (dim == 0) {
      numel = 0;
      continue;
    }
    if (numel > std::numeric_limits<std::uint64_t>::max() / dim) {
      return Status::Error(where + ": size " + FormatDims(args.size) + " overflows 64 bits");
    }
    numel *= dim;
    if (step != 0 && (dim - 1) > (storage.numel - std::min(last, storage.numel)) / step) {
      out_of_range = true;
    } else {
      last += (dim - 1) * step;
    }
  }
  // An empty view reads nothing, so only its offset has to be in range.
  out_of_range = numel == 0 ? offset > storage.numel : out_of_range || last >= storage.numel;
  if (out_of_range) {
    return Status::Error(where + " (storage offset " + std::to_string(offset) + ", size " +
                         FormatDims(args.size) + ", stride " + FormatDims(args.stride) +
                         ") reaches past the end of its storage '" + storage.key + "' of " +
                         std::to_string(storage.numel) + " elements");
  }
  tensor.nbytes = numel * element_size;

  // Row-major check. Like torch, it ignores the stride of dimensions of size 1.
  bool contiguous = true;
  std::uint64_t expected = 1;
  for (std::size_t d = args.size.size(); d-- > 0;) {
    if (args.size[d] == 1) continue;
    if (static_cast<std::uint64_t>(args.stride[d]) != expected) contiguous = false;
    expected *= static_cast<std::uint64_t>(args.size[d]);
  }
  if (contiguous || numel == 0) {
    tensor.file_offset = storage.file_offset + offset * element_size;
    return tensor;
  }
  // NOTE: a broadcast view (stride 0) larger than its storage is rejected so
  // that a small file cannot request a huge copy.
  if (tensor.nbytes > storage.numel * element_size) {
    return Status::Error(where + " is a view of " + std::to_string(tensor.nbytes) +
                         " bytes, larger than its storage '" + storage.key +
                         "'; broadcast views are not supported");
  }
  tensor.in_file = false;
  CopyStrided(file.data() + storage.file_offset, element_size, args.storage_offset, args.size,
              args.stride, numel, &tensor.materialized);
  return tensor;
}

// Locates the bytes of a storage named by a persistent id.
using StorageLocator = std::function<Result<Storage>(const std::string& where, const Value&)>;

std::string ScalarText(const Value& value) {
  switch (value.kind) {
    case Value::Kind::kBool:
      return value.boolean ? "True" : "False";
    case Value::Kind::kInt:
      return std::to_string(value.integer);
    case Value::Kind::kFloat: {
      char text[32];
      std::snprintf(text, sizeof(text), "%.17g", value.floating);
      return text;
    }
    case Value::Kind::kNone:
      return "None";
    default:
      return value.text;
  }
}

bool IsScalar(const Value& value) {
  return value.kind == Value::Kind::kBool || value.kind == Value::Kind::kInt ||
         value.kind == Value::Kind::kFloat || value.kind == Value::Kind::kString ||
         value.kind == Value::Kind::kNone;
}

// Turns the unpickled top-level object into tensors and extras.
Result<TorchCheckpoint> ConvertObject(const std::string& path, const Value& top,
                                      const StorageLocator& locate,
                                      std::span<const std::uint8_t> file) {
  if (top.kind != Value::Kind::kDict) {
    return Status::Error(path + ": the checkpoint's top-level object is a " +
                         std::string(pickle::KindName(top.kind)) + ", not a dict");
  }
  TorchCheckpoint checkpoint;
  const Value* state = top.Find("state_dict");
  if (state != nullptr) {
    if (state->kind != Value::Kind::kDict) {
      return Status::Error(path + ": \"state_dict\" is a " +
                           std::string(pickle::KindName(state->kind)) + ", not a dict");
    }
    checkpoint.had_state_dict_wrapper = true;
  } else {
    state = &top;
  }
  for (const auto& [key, value] : top.entries) {
    if (key->kind == Value::Kind::kString && IsScalar(*value)) {
      checkpoint.extras[key->text] = ScalarText(*value);
    }
  }

  for (const auto& [key, value] : state->entries) {
    if (key->kind != Value::Kind::kString) {
      return Status::Error(path + ": state dict key is a " +
                           std::string(pickle::KindName(key->kind)) + ", not a string");
    }
    if (value->kind != Value::Kind::kTensor) {
      // Without the wrapper, top-level scalars went to `extras` above.
      if (!checkpoint.had_state_dict_wrapper && IsScalar(*value)) continue;
      return Status::Error(path + ": state dict entry '" + key->text + "' is a " +
                           std::string(pickle::KindName(value->kind)) + ", not a tensor");
    }
    const std::string where = path + ": tensor '" + key->text + "'";
    SDONNX_ASSIGN_OR_RETURN(Storage storage, locate(where, *value->tensor.storage));
    SDONNX_ASSIGN_OR_RETURN(TorchTensor tensor,
                            BuildTensor(path, key->text, value->tensor, storage, file));
    checkpoint.tensors.push_back(std::move(tensor));
  }
  if (checkpoint.tensors.empty()) {
    return Status::Error(path + ": the checkpoint contains no tensors");
  }
  return checkpoint;
}

// torch.save's pickled object: data.pkl at the top or one folder down.
bool IsDataPklRecord(const std::string& name) {
  const bool top_level = name.find('/') == name.rfind('/');
  return top_level && (name == "data.pkl" || name.ends_with("/data.pkl"));
}

Result<TorchCheckpoint> ReadZipCheckpoint(const std::string& path,
                                          std::span<const std::uint8_t> bytes) {
  SDONNX_ASSIGN_OR_RETURN(std::vector<ZipRecord> records, ReadZipDirectory(path, bytes));
  const ZipRecord* data_pkl = nullptr;
  std::unordered_map<std::string, const ZipRecord*> by_name;
  for (const ZipRecord& record : records) {
    by_name[record.name] = &record;
    if (IsDataPklRecord(record.name)) {
      if (data_pkl != nullptr) {
        return Status::Error(path + ": zip has two data.pkl records, '" + data_pkl->name +
                             "' and '" + record.name + "'");
      }
      data_pkl = &record;
    }
  }
  if (data_pkl == nullptr) {
    return Status::Error(path + ": zip has no data.pkl record; it is not a torch checkpoint");
  }
  const std::string folder = data_pkl->name.substr(0, data_pkl->name.size() - 8);

  SDONNX_ASSIGN_OR_RETURN(
      pickle::UnpickleResult unpickled,
      pickle::Unpickle(bytes.subspan(data_pkl->offset, data_pkl->size),
                       path + ": " + data_pkl->name));

  auto locate = [&](const std::string& where, const Value& persistent) -> Result<Storage> {
    SDONNX_ASSIGN_OR_RETURN(Storage storage, ParseStorageId(where, persistent));
    const std::string record_name = folder + "data/" + storage.key;
    auto it = by_name.find(record_name);
    if (it == by_name.end()) {
      return Status::Error(where + ": storage record '" + record_name + "' is missing");
    }
    const std::uint64_t element_size = DTypeSize(storage.dtype);
    if (storage.numel > it->second->size / element_size ||
        storage.numel * element_size != it->second->size) {
      return Status::Error(where + ": storage record '" + record_name + "' has " +
                           std::to_string(it->second->size) + " bytes but the pickle declares " +
                           std::to_string(storage.numel) + " elements of " +
                           std::to_string(element_size) + " bytes");
    }
    storage.file_offset = it->second->offset;
    return storage;
  };
  return ConvertObject(path, *unpickled.value, locate, bytes);
}

Result<TorchCheckpoint> ReadLegacyCheckpoint(const std::string& path,
                                             std::span<const std::uint8_t> bytes) {
  // The first two pickles are the magic number, which the caller matched,
  // and the protocol version.
  std::uint64_t pos = sizeof(kLegacyMagicPickle);
  if (bytes.size() <= pos || bytes[pos] != '.') {
    return Status::Error(path + ": legacy magic number pickle is not followed by STOP");
  }
  ++pos;
  auto next = [&]() -> Result<pickle::UnpickleResult> {
    SDONNX_ASSIGN_OR_RETURN(pickle::UnpickleResult result,
                            pickle::Unpickle(bytes.subspan(pos), path, pos));
    pos += result.end;
    return result;
  };
  SDONNX_ASSIGN_OR_RETURN(pickle::UnpickleResult protocol, next());
  if (protocol.value->kind != Value::Kind::kInt ||
      protocol.value->integer != kLegacyProtocolVersion) {
    return Status::Error(path + ": legacy protocol version is not " +
                         std::to_string(kLegacyProtocolVersion) +
                         "; the file is not a torch checkpoint or is corrupt");
  }
  SDONNX_ASSIGN_OR_RETURN(pickle::UnpickleResult sys_info, next());
  if (sys_info.value->kind == Value::Kind::kDict) {
    const Value* little_endian = sys_info.value->Find("little_endian");
    if (little_endian != nullptr && little_endian->kind == Value::Kind::kBool &&
        !little_endian->boolean) {
      return Status::Error(path + ": checkpoint was saved on a big-endian machine, which is not "
                           "supported");
    }
  }
  SDONNX_ASSIGN_OR_RETURN(pickle::UnpickleResult object, next());
  SDONNX_ASSIGN_OR_RETURN(pickle::UnpickleResult keys, next());
  if (keys.value->kind != Value::Kind::kList) {
    return Status::Error(path + ": legacy storage key list is a " +
                         std::string(pickle::KindName(keys.value->kind)) + ", not a list");
  }

  // Every persistent id in the object, so that each storage's element size
  // is known even if no state-dict tensor uses it.
  std::map<std::string, Storage> storages;
  for (const ValuePtr& persistent : object.persistent_ids) {
    SDONNX_ASSIGN_OR_RETURN(Storage storage, ParseStorageId(path, *persistent));
    storages.emplace(storage.key, storage);
  }
  for (const ValuePtr& key : keys.value->items) {
    if (key->kind != Value::Kind::kString) {
      return Status::Error(path + ": legacy storage key is not a string");
    }
    auto it = storages.find(key->text);
    if (it == storages.end()) {
      return Status::Error(path + ": legacy storage '" + key->text +
                           "' is listed but no persistent id names it");
    }
    Storage& storage = it->second;
    if (bytes.size() - pos < 8) {
      return Status::Error(path + ": legacy storage '" + key->text + "' header at byte " +
                           std::to_string(pos) + " is past the end of the file; it is truncated");
    }
    const std::uint64_t count = ReadLe(bytes.data() + pos, 8);
    if (count != storage.numel) {
      return Status::Error(path + ": legacy storage '" + key->text + "' has " +
                           std::to_string(count) + " elements but the pickle declares " +
                           std::to_string(storage.numel));
    }
    pos += 8;
    const std::uint64_t element_size = DTypeSize(storage.dtype);
    if (count > (bytes.size() - pos) / element_size) {
      return Status::Error(path + ": legacy storage '" + key->text + "' of " +
                           std::to_string(count) + " elements at byte " + std::to_string(pos) +
                           " reaches past the end of the file; it is truncated");
    }
    storage.file_offset = pos;
    pos += count * element_size;
  }
  std::set<std::string> listed;
  for (const ValuePtr& key : keys.value->items) listed.insert(key->text);

  auto locate = [&](const std::string& where, const Value& persistent) -> Result<Storage> {
    SDONNX_ASSIGN_OR_RETURN(Storage storage, ParseStorageId(where, persistent));
    if (!listed.count(storage.key)) {
      return Status::Error(where + ": storage '" + storage.key + "' is not in the key list");
    }
    return storages.at(storage.key);
  };
  return ConvertObject(path, *object.value, locate, bytes);
}

bool StartsWith(std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> prefix) {
  return bytes.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), bytes.begin());
}

bool StartsLikeZip(std::span<const std::uint8_t> bytes) {
  return bytes.size() >= 4 && ReadLe(bytes.data(), 4) == kLocalHeaderSignature;
}

}  // namespace

bool LooksLikeTorchCheckpoint(std::span<const std::uint8_t> bytes) {
  if (StartsWith(bytes, kLegacyMagicPickle)) return true;
  if (!StartsLikeZip(bytes) || bytes.size() < kLocalHeaderSize) return false;
  // torch.save writes data.pkl as the first record.
  const std::uint64_t name_length = ReadLe(bytes.data() + 26, 2);
  if (bytes.size() - kLocalHeaderSize < name_length) return false;
  const std::string_view name(reinterpret_cast<const char*>(bytes.data() + kLocalHeaderSize),
                              name_length);
  return name == "data.pkl" || name.ends_with("/data.pkl");
}

Result<bool> ZipHasDataPkl(const std::string& path, std::span<const std::uint8_t> bytes) {
  SDONNX_ASSIGN_OR_RETURN(std::vector<ZipRecord> records, ReadZipDirectory(path, bytes));
  return std::any_of(records.begin(), records.end(),
                     [](const ZipRecord& record) { return IsDataPklRecord(record.name); });
}

Result<TorchCheckpoint> ReadTorchCheckpoint(const MappedFile& file) {
  return ReadTorchCheckpoint(file.path(), file.bytes());
}

Result<TorchCheckpoint> ReadTorchCheckpoint(const std::string& path,
                                            std::span<const std::uint8_t> bytes) {
  if (StartsLikeZip(bytes)) return ReadZipCheckpoint(path, bytes);
  if (StartsWith(bytes, kLegacyMagicPickle)) return ReadLegacyCheckpoint(path, bytes);
  return Status::Error(path + ": not a PyTorch checkpoint; it starts with neither a zip "
                       "header nor the legacy torch magic number");
}

}  // namespace sdonnx
