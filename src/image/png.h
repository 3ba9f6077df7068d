// PNG files through libspng: 8-bit RGB images with their text chunks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/status.h"

namespace sdonnx {

// An 8-bit image, rows top to bottom, channels interleaved (RGB or gray).
struct Image {
  std::int64_t width = 0;
  std::int64_t height = 0;
  int channels = 3;
  std::vector<std::uint8_t> pixels;
};

// Reads any PNG and converts it to 8-bit RGB, or to 8-bit gray when
// `gray` is set. Transparency is dropped.
Result<Image> ReadPng(const std::string& path, bool gray = false);

// Text chunks (tEXt, zTXt, iTXt) of a PNG file, by keyword.
Result<std::map<std::string, std::string>> ReadPngText(const std::string& path);

// Encodes an RGB image as PNG bytes, with text chunks: tEXt when the text is
// ASCII, iTXt (UTF-8) otherwise.
Result<std::string> EncodePng(const Image& image, const std::map<std::string, std::string>& text);

}  // namespace sdonnx
