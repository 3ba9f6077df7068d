#include "formats/protobuf_wire.h"

namespace sdonnx::wire {
namespace {

void AppendVarint(std::uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

}  // namespace

bool Reader::ReadVarint(std::uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (at_ >= bytes_.size()) return false;
    const std::uint8_t byte = bytes_[at_++];
    *value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;  // More than 10 bytes.
}

bool Reader::Next(Field* field) {
  const std::size_t begin = at_;
  std::uint64_t tag = 0;
  if (!ReadVarint(&tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) return false;
  field->number = static_cast<std::uint32_t>(tag >> 3);
  field->type = static_cast<int>(tag & 7);
  field->payload = {};
  std::uint64_t skip = 0;
  switch (field->type) {
    case kVarint: {
      std::uint64_t ignored = 0;
      if (!ReadVarint(&ignored)) return false;
      break;
    }
    case kFixed64: skip = 8; break;
    case kFixed32: skip = 4; break;
    case kLengthDelimited:
      if (!ReadVarint(&skip)) return false;
      if (skip <= bytes_.size() - at_) field->payload = bytes_.subspan(at_, skip);
      break;
    default: return false;  // Groups (3, 4) are not used by ONNX.
  }
  if (skip > bytes_.size() - at_) return false;
  at_ += skip;
  field->encoded = bytes_.subspan(begin, at_ - begin);
  return true;
}

void AppendLengthDelimited(std::uint32_t number, std::span<const std::uint8_t> payload,
                           std::string* out) {
  AppendVarint((static_cast<std::uint64_t>(number) << 3) | kLengthDelimited, out);
  AppendVarint(payload.size(), out);
  out->append(reinterpret_cast<const char*>(payload.data()), payload.size());
}

}  // namespace sdonnx::wire
