#include "image/png.h"
#include "util/regular_file.h"

#include <spng.h>

#include <fstream>
#include <memory>
#include <sstream>

namespace sdonnx {
namespace {

using SpngContext = std::unique_ptr<spng_ctx, decltype(&spng_ctx_free)>;

Result<std::string> ReadWholeFile(const std::string& path) {
  SDONNX_RETURN_IF_ERROR(CheckRegularFile(path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::Error(path + ": cannot open the image for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Status SpngError(const std::string& path, const char* action, int code) {
  return Status::Error(path + ": " + action + " failed: " + spng_strerror(code) +
                       "; is it a valid PNG file?");
}

Result<SpngContext> OpenDecoder(const std::string& path, const std::string& bytes) {
  SpngContext ctx(spng_ctx_new(0), spng_ctx_free);
  if (!ctx) return Status::Error("libspng: out of memory");
  // Limits keep a hostile file from asking for unbounded memory.
  spng_set_image_limits(ctx.get(), 16384, 16384);
  spng_set_chunk_limits(ctx.get(), 64u << 20, 256u << 20);
  if (int rc = spng_set_png_buffer(ctx.get(), bytes.data(), bytes.size())) {
    return SpngError(path, "reading", rc);
  }
  return ctx;
}

bool IsAscii(const std::string& text) {
  for (unsigned char c : text) {
    if (c >= 0x80) return false;
  }
  return true;
}

}  // namespace

Result<Image> ReadPng(const std::string& path, bool gray) {
  SDONNX_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  SDONNX_ASSIGN_OR_RETURN(SpngContext ctx, OpenDecoder(path, bytes));
  struct spng_ihdr ihdr {};
  if (int rc = spng_get_ihdr(ctx.get(), &ihdr)) return SpngError(path, "reading the header", rc);
  std::size_t size = 0;
  if (int rc = spng_decoded_image_size(ctx.get(), SPNG_FMT_RGB8, &size)) {
    return SpngError(path, "sizing the image", rc);
  }
  Image image;
  image.width = ihdr.width;
  image.height = ihdr.height;
  image.pixels.resize(size);
  if (int rc = spng_decode_image(ctx.get(), image.pixels.data(), size, SPNG_FMT_RGB8, 0)) {
    return SpngError(path, "decoding", rc);
  }
  if (!gray) return image;
  // libspng converts only gray sources to gray, so RGB is reduced here with
  // the ITU-R BT.601 luma weights (PIL's convert("L") uses the same).
  const std::size_t count = image.pixels.size() / 3;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint8_t* rgb = &image.pixels[i * 3];
    image.pixels[i] = static_cast<std::uint8_t>((rgb[0] * 299 + rgb[1] * 587 + rgb[2] * 114 + 500) / 1000);
  }
  image.pixels.resize(count);
  image.channels = 1;
  return image;
}

Result<std::map<std::string, std::string>> ReadPngText(const std::string& path) {
  SDONNX_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path));
  SDONNX_ASSIGN_OR_RETURN(SpngContext ctx, OpenDecoder(path, bytes));
  std::map<std::string, std::string> out;
  std::uint32_t count = 0;
  int rc = spng_get_text(ctx.get(), nullptr, &count);
  if (rc == SPNG_ECHUNKAVAIL) return out;  // No text chunks.
  if (rc) return SpngError(path, "reading text chunks", rc);
  std::vector<spng_text> texts(count);
  if ((rc = spng_get_text(ctx.get(), texts.data(), &count))) {
    return SpngError(path, "reading text chunks", rc);
  }
  for (const spng_text& t : texts) out[t.keyword] = std::string(t.text, t.length);
  return out;
}

Result<std::string> EncodePng(const Image& image, const std::map<std::string, std::string>& text) {
  if (image.channels != 3 ||
      image.pixels.size() != static_cast<std::size_t>(image.width * image.height * 3)) {
    return Status::Error("EncodePng: expected " + std::to_string(image.width) + "x" +
                         std::to_string(image.height) + " RGB pixels");
  }
  SpngContext ctx(spng_ctx_new(SPNG_CTX_ENCODER), spng_ctx_free);
  if (!ctx) return Status::Error("libspng: out of memory");
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);
  struct spng_ihdr ihdr {};
  ihdr.width = static_cast<std::uint32_t>(image.width);
  ihdr.height = static_cast<std::uint32_t>(image.height);
  ihdr.bit_depth = 8;
  ihdr.color_type = SPNG_COLOR_TYPE_TRUECOLOR;
  if (int rc = spng_set_ihdr(ctx.get(), &ihdr)) return SpngError("(output)", "writing", rc);

  std::vector<std::string> values;  // Owns the text that the chunks point to.
  std::vector<spng_text> chunks;
  values.reserve(text.size());
  std::string empty;
  for (const auto& [keyword, value] : text) {
    values.push_back(value);
    spng_text chunk{};
    std::snprintf(chunk.keyword, sizeof(chunk.keyword), "%s", keyword.c_str());
    chunk.type = IsAscii(value) ? SPNG_TEXT : SPNG_ITXT;
    chunk.length = values.back().size();
    chunk.text = values.back().data();
    chunk.language_tag = empty.data();
    chunk.translated_keyword = empty.data();
    chunks.push_back(chunk);
  }
  if (!chunks.empty()) {
    if (int rc = spng_set_text(ctx.get(), chunks.data(), static_cast<std::uint32_t>(chunks.size()))) {
      return SpngError("(output)", "adding text chunks", rc);
    }
  }
  if (int rc = spng_encode_image(ctx.get(), image.pixels.data(), image.pixels.size(),
                                 SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE)) {
    return SpngError("(output)", "encoding", rc);
  }
  std::size_t length = 0;
  int error = 0;
  void* buffer = spng_get_png_buffer(ctx.get(), &length, &error);
  if (buffer == nullptr) return SpngError("(output)", "encoding", error);
  std::string png(static_cast<const char*>(buffer), length);
  std::free(buffer);
  return png;
}

}  // namespace sdonnx
