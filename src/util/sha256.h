#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace sdonnx {

// Returns the lowercase hex SHA-256 of `bytes`, computed with OpenSSL.
// `after_chunk(offset, length)`, if set, is called after each 64 MiB chunk
// is hashed, so a caller streaming a memory map can release its pages.
std::string Sha256Hex(std::span<const std::uint8_t> bytes,
                      const std::function<void(std::size_t, std::size_t)>& after_chunk = {});

// Returns the lowercase hex SHA-256 of bytes [offset, offset + length) of
// the open file `fd`, read with pread in 1 MiB blocks, or "" when a read
// fails or ends early. Reading copies from the page cache, which on Linux
// costs less than faulting the same range into a memory map.
std::string Sha256HexOfFileRange(int fd, std::uint64_t offset, std::uint64_t length);

}  // namespace sdonnx
