#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace sdonnx {

// Lowercase hex SHA-256 of `bytes`, computed with OpenSSL.
std::string Sha256Hex(std::span<const std::uint8_t> bytes);

}  // namespace sdonnx
