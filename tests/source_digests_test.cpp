// The source digests that convert records: the one-pass read over the file
// must give the same SHA-256 and per-tensor XXH3-128 as hashing each range
// on its own, for safetensors files, .ckpt copies and overlapping views.
#include <gtest/gtest.h>

#include "formats/checkpoint.h"
#include "formats/mapped_file.h"
#include "rebuild/source_digests.h"
#include "test_support.h"
#include "util/sha256.h"
#include "util/xxh3.h"

namespace sdonnx {
namespace {

using testing::Fixture;
using testing::MakeZip;
using testing::TempDir;
using testing::WriteBytes;

// Checks HashSource against one-shot hashes of the file and of each tensor.
void ExpectOneShotDigests(const std::filesystem::path& path) {
  auto checkpoint = Checkpoint::Open(path.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  const SourceDigests digests = HashSource(**checkpoint);
  EXPECT_EQ(digests.file_sha256, Sha256Hex((*checkpoint)->mapped().bytes()));
  const std::vector<TensorInfo>& tensors = (*checkpoint)->tensors();
  ASSERT_EQ(digests.tensor_digests.size(), tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(digests.tensor_digests[i], Xxh3_128Hex((*checkpoint)->Data(tensors[i])))
        << tensors[i].name;
  }
}

std::string LittleEndian32(std::uint32_t value) {
  std::string out;
  for (int i = 0; i < 4; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// Pickle opcodes: a BINUNICODE string, a BININT and a GLOBAL.
std::string Str(const std::string& text) { return "X" + LittleEndian32(text.size()) + text; }
std::string Int4(std::uint32_t value) { return "J" + LittleEndian32(value); }
std::string Global(const std::string& module, const std::string& name) {
  return "c" + module + "\n" + name + "\n";
}

// `key`: a contiguous float32 view of `size` elements at `offset` in
// FloatStorage '0' of `numel` elements, as a SETITEMS pair.
std::string ViewItem(const std::string& key, std::uint32_t numel, std::uint32_t offset,
                     std::uint32_t size) {
  return Str(key) + Global("torch._utils", "_rebuild_tensor_v2") + "((" + Str("storage") +
         Global("torch", "FloatStorage") + Str("0") + Str("cpu") + Int4(numel) + "tQ" +
         Int4(offset) + Int4(size) + "\x85" + Int4(1) + "\x85" + "\x89" +
         Global("collections", "OrderedDict") + ")RtR";
}

TEST(Xxh3, EmptyInputGivesTheReferenceDigest) {
  // The value `xxh128sum` prints for an empty file.
  EXPECT_EQ(Xxh3_128Hex({}), "99aa06d3014798d86001c324468d497f");
}

TEST(SourceDigests, MatchOneShotHashesOfSafetensors) {
  ExpectOneShotDigests(Fixture("tiny/tiny-sd1.safetensors"));
  ExpectOneShotDigests(Fixture("tiny/tiny-sdxl.safetensors"));
}

TEST(SourceDigests, MatchOneShotHashesOfCkpt) {
  ExpectOneShotDigests(Fixture("ckpt/tiny-sd1.ckpt"));
  ExpectOneShotDigests(Fixture("ckpt/tiny-sd1-legacy.ckpt"));
}

TEST(SourceDigests, CoverCopiedCkptViews) {
  const auto path = Fixture("ckpt/tiny-sd1-shared-storage.ckpt");
  auto checkpoint = Checkpoint::Open(path.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  bool any_in_memory = false;
  for (const TensorInfo& t : (*checkpoint)->tensors()) any_in_memory |= t.in_memory;
  EXPECT_TRUE(any_in_memory) << "the fixture no longer has a strided view";
  ExpectOneShotDigests(path);
}

TEST(SourceDigests, CoverOverlappingViewsAcrossBlocks) {
  // Two views of one 3 MiB storage that share its middle MiB, so both are
  // open while the pass reads the shared 1 MiB blocks.
  constexpr std::uint32_t kNumel = 3 << 18;
  constexpr std::uint32_t kViewSize = 2 << 18;
  std::string storage(std::size_t{kNumel} * 4, '\0');
  for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<char>(i * 131 + 7);
  const std::string pickle = "\x80\x02}(" + ViewItem("low", kNumel, 0, kViewSize) +
                             ViewItem("high", kNumel, 1 << 18, kViewSize) + "u.";
  TempDir dir;
  WriteBytes(dir / "overlap.ckpt",
             MakeZip({{"overlap/data.pkl", pickle}, {"overlap/data/0", storage}}));

  auto checkpoint = Checkpoint::Open((dir / "overlap.ckpt").string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  const std::vector<TensorInfo>& tensors = (*checkpoint)->tensors();
  ASSERT_EQ(tensors.size(), 2u);
  EXPECT_FALSE(tensors[0].in_memory);
  EXPECT_FALSE(tensors[1].in_memory);
  EXPECT_LT(tensors[1].offset, tensors[0].offset + tensors[0].nbytes);
  ExpectOneShotDigests(dir / "overlap.ckpt");
}

}  // namespace
}  // namespace sdonnx
