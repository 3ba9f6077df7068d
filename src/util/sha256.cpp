#include "util/sha256.h"

#include <openssl/evp.h>

#include <memory>

namespace sdonnx {

std::string Sha256Hex(std::span<const std::uint8_t> bytes,
                      const std::function<void(std::size_t, std::size_t)>& after_chunk) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  constexpr std::size_t kChunk = 64 << 20;
  for (std::size_t at = 0; at < bytes.size(); at += kChunk) {
    const std::size_t n = std::min(kChunk, bytes.size() - at);
    EVP_DigestUpdate(ctx.get(), bytes.data() + at, n);
    if (after_chunk) after_chunk(at, n);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

}  // namespace sdonnx
