#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

struct XXH3_state_s;

namespace sdonnx {

// An incremental XXH3-128 (libxxhash, seed 0): a fast non-cryptographic
// hash that runs at many GB/s per core.
class Xxh3_128Hasher {
 public:
  Xxh3_128Hasher();
  ~Xxh3_128Hasher();
  Xxh3_128Hasher(Xxh3_128Hasher&&) noexcept;
  Xxh3_128Hasher& operator=(Xxh3_128Hasher&&) noexcept;

  void Update(std::span<const std::uint8_t> bytes);
  // Returns the digest of the bytes so far as 32 lowercase hex digits of its
  // canonical (big-endian) form, the text `xxh128sum` prints.
  std::string FinishHex() const;

 private:
  struct StateFree {
    void operator()(XXH3_state_s* state) const;
  };
  std::unique_ptr<XXH3_state_s, StateFree> state_;
};

// Returns the XXH3-128 of `bytes` as Xxh3_128Hasher::FinishHex writes it.
std::string Xxh3_128Hex(std::span<const std::uint8_t> bytes);

}  // namespace sdonnx
