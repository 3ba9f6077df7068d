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

}  // namespace sdonnx
