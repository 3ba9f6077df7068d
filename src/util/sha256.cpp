#include "util/sha256.h"

#include <openssl/evp.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <vector>

namespace sdonnx {
namespace {

std::string HexDigest(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 15];
  }
  return out;
}

}  // namespace

std::string Sha256HexOfFileRange(int fd, std::uint64_t offset, std::uint64_t length) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<unsigned char> block(1 << 20);
  std::uint64_t done = 0;
  while (done < length) {
    const auto block_bytes =
        static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), length - done));
    const ssize_t got = ::pread(fd, block.data(), block_bytes, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return "";
    EVP_DigestUpdate(ctx.get(), block.data(), static_cast<std::size_t>(got));
    done += static_cast<std::uint64_t>(got);
  }
  return HexDigest(ctx.get());
}

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
  return HexDigest(ctx.get());
}

}  // namespace sdonnx
