// A reader of the protobuf wire format over bytes in memory, for copying a
// message with some fields left out without parsing it. The ONNX reader
// uses it to keep initializer raw_data in the memory map instead of copying
// it into the parsed ModelProto.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace sdonnx::wire {

inline constexpr int kVarint = 0;
inline constexpr int kFixed64 = 1;
inline constexpr int kLengthDelimited = 2;
inline constexpr int kFixed32 = 5;

struct Field {
  std::uint32_t number = 0;
  int type = kVarint;
  // The payload of a length-delimited field.
  std::span<const std::uint8_t> payload;
  // The whole field, tag included, as a span of the reader's bytes.
  std::span<const std::uint8_t> encoded;
};

class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> bytes) : bytes_(bytes) {}
  bool done() const { return at_ >= bytes_.size(); }
  // Reads the next field. Returns false on malformed bytes: a truncated
  // varint or payload, field number 0, or a group or unknown wire type.
  bool Next(Field* field);

 private:
  bool ReadVarint(std::uint64_t* value);

  std::span<const std::uint8_t> bytes_;
  std::size_t at_ = 0;
};

// Appends a length-delimited field with `payload` to `out`.
void AppendLengthDelimited(std::uint32_t number, std::span<const std::uint8_t> payload,
                           std::string* out);

}  // namespace sdonnx::wire
