#include "util/xxh3.h"

#include <xxhash.h>

#include <new>

namespace sdonnx {
namespace {

std::string CanonicalHex(XXH128_hash_t hash) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(2 * sizeof(canonical.digest));
  for (const unsigned char byte : canonical.digest) {
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  }
  return out;
}

}  // namespace

void Xxh3_128Hasher::StateFree::operator()(XXH3_state_s* state) const { XXH3_freeState(state); }

Xxh3_128Hasher::Xxh3_128Hasher() : state_(XXH3_createState()) {
  if (!state_) throw std::bad_alloc();
  XXH3_128bits_reset(state_.get());
}

Xxh3_128Hasher::~Xxh3_128Hasher() = default;
Xxh3_128Hasher::Xxh3_128Hasher(Xxh3_128Hasher&&) noexcept = default;
Xxh3_128Hasher& Xxh3_128Hasher::operator=(Xxh3_128Hasher&&) noexcept = default;

void Xxh3_128Hasher::Update(std::span<const std::uint8_t> bytes) {
  XXH3_128bits_update(state_.get(), bytes.data(), bytes.size());
}

std::string Xxh3_128Hasher::FinishHex() const {
  return CanonicalHex(XXH3_128bits_digest(state_.get()));
}

std::string Xxh3_128Hex(std::span<const std::uint8_t> bytes) {
  return CanonicalHex(XXH3_128bits(bytes.data(), bytes.size()));
}

}  // namespace sdonnx
