// The digests of a source checkpoint that `convert` records and `rebuild`
// checks: the SHA-256 of the whole file and a digest of each tensor's bytes.
//
// The whole-file SHA-256 is the cryptographic check: rebuild compares the
// file it writes against it. The per-tensor digests only name the tensors
// that differ, so they use XXH3-128, which costs little more than reading
// the bytes. Extras files written before sdonnx recorded the algorithm
// (no sdonnx.tensor_digest entry) hold SHA-256 per tensor.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/checkpoint.h"

namespace sdonnx {

enum class TensorDigest { kSha256, kXxh3_128 };

// The extras metadata entry that names the per-tensor digest algorithm.
inline constexpr char kTensorDigestKey[] = "sdonnx.tensor_digest";

// The algorithm's name in metadata: "sha256" or "xxh3-128".
std::string_view TensorDigestName(TensorDigest digest);
// The algorithm's name in messages: "SHA-256" or "XXH3-128".
std::string_view TensorDigestLabel(TensorDigest digest);
// Returns the algorithm that `name` names in metadata, or nullopt for an unknown name.
std::optional<TensorDigest> TensorDigestFromName(std::string_view name);
// The number of lowercase hex digits in a digest: 64 for SHA-256, 32 for XXH3-128.
std::size_t TensorDigestHexLength(TensorDigest digest);
// Returns the lowercase hex digest of `bytes`.
std::string TensorDigestHex(TensorDigest digest, std::span<const std::uint8_t> bytes);

struct SourceDigests {
  std::string file_sha256;
  // XXH3-128 of each tensor, in the checkpoint's tensor order.
  std::vector<std::string> tensor_digests;
};

// Computes the file's SHA-256 and each tensor's XXH3-128 in one sequential
// read of the file with pread in 1 MiB blocks, so no tensor is held in
// memory. pread copies from the page cache, which on Linux costs less than
// faulting the same range into the memory map. Tensors copied out of the
// file (TensorInfo::in_memory) are hashed from their copies. If a read
// fails, the pass runs again over the memory map and releases each block's
// pages after hashing it. A file that shrank then raises SIGBUS rather than
// giving wrong digests.
SourceDigests HashSource(const Checkpoint& checkpoint);

}  // namespace sdonnx
