#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

struct evp_md_ctx_st;

namespace sdonnx {

// An incremental SHA-256, computed with OpenSSL.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(Sha256Hasher&&) noexcept;
  Sha256Hasher& operator=(Sha256Hasher&&) noexcept;

  void Update(std::span<const std::uint8_t> bytes);
  // Returns the lowercase hex digest of the bytes so far. Call it once.
  std::string FinishHex();

 private:
  struct ContextFree {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, ContextFree> ctx_;
};

// Returns the lowercase hex SHA-256 of `bytes`, computed with OpenSSL.
// `after_chunk(offset, length)`, if set, is called after each 64 MiB chunk
// is hashed, so a caller streaming a memory map can release its pages.
std::string Sha256Hex(std::span<const std::uint8_t> bytes,
                      const std::function<void(std::size_t, std::size_t)>& after_chunk = {});

}  // namespace sdonnx
