#include "rebuild/source_digests.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>

#include "util/log.h"
#include "util/sha256.h"
#include "util/xxh3.h"

namespace sdonnx {
namespace {

constexpr std::size_t kBlockBytes = 1 << 20;

// Returns the bytes at [offset, offset + length) of the file, or fewer when
// a read fails.
using BlockReader = std::function<std::span<const std::uint8_t>(std::uint64_t, std::size_t)>;

// A tensor whose range the pass has entered but not yet finished.
struct OpenTensor {
  std::size_t index = 0;
  std::uint64_t end = 0;
  Xxh3_128Hasher hasher;
};

// The indices of the tensors that are ranges of the file, by offset.
std::vector<std::size_t> FileTensorsByOffset(const std::vector<TensorInfo>& tensors) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].in_memory) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&tensors](std::size_t a, std::size_t b) {
    return tensors[a].offset < tensors[b].offset;
  });
  return order;
}

// Reads the whole file once, in order, and feeds each block to the file's
// SHA-256 and to the digest of every tensor whose range the block overlaps.
// Ranges may overlap (views of one storage in a .ckpt), so several tensors
// can be open at once. Returns nullopt when a read comes back short.
std::optional<SourceDigests> HashInOnePass(
    const Checkpoint& checkpoint, const BlockReader& read_block,
    const std::function<void(std::uint64_t, std::size_t)>& after_block) {
  const std::vector<TensorInfo>& tensors = checkpoint.tensors();
  const std::vector<std::size_t> by_offset = FileTensorsByOffset(tensors);
  const std::uint64_t file_size = checkpoint.mapped().size();
  SourceDigests digests;
  digests.tensor_digests.resize(tensors.size());
  Sha256Hasher file_hasher;
  std::vector<OpenTensor> open;
  std::size_t next = 0;
  for (std::uint64_t at = 0; at < file_size;) {
    const auto length =
        static_cast<std::size_t>(std::min<std::uint64_t>(kBlockBytes, file_size - at));
    const std::span<const std::uint8_t> block = read_block(at, length);
    if (block.size() != length) return std::nullopt;
    file_hasher.Update(block);
    const std::uint64_t block_end = at + length;
    for (; next < by_offset.size() && tensors[by_offset[next]].offset < block_end; ++next) {
      const TensorInfo& t = tensors[by_offset[next]];
      open.push_back({by_offset[next], t.offset + t.nbytes, {}});
    }
    for (auto it = open.begin(); it != open.end();) {
      const std::uint64_t from = std::max(tensors[it->index].offset, at);
      const std::uint64_t to = std::min(it->end, block_end);
      if (from < to) it->hasher.Update(block.subspan(from - at, to - from));
      if (it->end > block_end) {
        ++it;
        continue;
      }
      digests.tensor_digests[it->index] = it->hasher.FinishHex();
      it = open.erase(it);
    }
    if (after_block) after_block(at, length);
    at = block_end;
  }
  digests.file_sha256 = file_hasher.FinishHex();
  // The pass does not reach tensors held in memory, nor empty tensors that
  // sit at the end of the file.
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    if (digests.tensor_digests[i].empty()) {
      digests.tensor_digests[i] = Xxh3_128Hex(checkpoint.Data(tensors[i]));
    }
  }
  return digests;
}

}  // namespace

std::string_view TensorDigestName(TensorDigest digest) {
  return digest == TensorDigest::kSha256 ? "sha256" : "xxh3-128";
}

std::string_view TensorDigestLabel(TensorDigest digest) {
  return digest == TensorDigest::kSha256 ? "SHA-256" : "XXH3-128";
}

std::optional<TensorDigest> TensorDigestFromName(std::string_view name) {
  for (const TensorDigest digest : {TensorDigest::kSha256, TensorDigest::kXxh3_128}) {
    if (name == TensorDigestName(digest)) return digest;
  }
  return std::nullopt;
}

std::size_t TensorDigestHexLength(TensorDigest digest) {
  return digest == TensorDigest::kSha256 ? 64 : 32;
}

std::string TensorDigestHex(TensorDigest digest, std::span<const std::uint8_t> bytes) {
  return digest == TensorDigest::kSha256 ? Sha256Hex(bytes) : Xxh3_128Hex(bytes);
}

SourceDigests HashSource(const Checkpoint& checkpoint) {
  const MappedFile& file = checkpoint.mapped();
  std::vector<std::uint8_t> buffer(kBlockBytes);
  const BlockReader pread_block = [&file, &buffer](std::uint64_t offset, std::size_t length) {
    std::size_t done = 0;
    while (done < length) {
      const ssize_t got = ::pread(file.fd(), buffer.data() + done, length - done,
                                  static_cast<off_t>(offset + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      done += static_cast<std::size_t>(got);
    }
    return std::span<const std::uint8_t>(buffer.data(), done);
  };
  if (std::optional<SourceDigests> digests = HashInOnePass(checkpoint, pread_block, {})) {
    return *std::move(digests);
  }
  LogDebug(file.path() +
           ": a read for the source digests failed or ended early; hashing the "
           "file through its memory map instead");
  const BlockReader mapped_block = [&file](std::uint64_t offset, std::size_t length) {
    return file.bytes().subspan(offset, length);
  };
  const auto release = [&file](std::uint64_t offset, std::size_t length) {
    file.DontNeed(offset, length);
  };
  return *HashInOnePass(checkpoint, mapped_block, release);
}

}  // namespace sdonnx
