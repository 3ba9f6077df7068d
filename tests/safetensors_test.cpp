// A catalogue of broken safetensors files, one per failure, plus the
// warnings for files that still load.
#include <gtest/gtest.h>

#include <cstring>

#include "formats/safetensors.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::TempDir;

// 8-byte little-endian length followed by the header text and `data_bytes`
// zero bytes.
std::string File(const std::string& header, std::size_t data_bytes,
                 std::int64_t declared_length = -1) {
  std::uint64_t n = declared_length >= 0 ? static_cast<std::uint64_t>(declared_length)
                                         : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

struct Parsed {
  Status status;
  std::vector<TensorInfo> tensors;
  std::vector<std::string> warnings;
};

Parsed Parse(const std::string& bytes) {
  Parsed p;
  std::map<std::string, std::string> metadata;
  p.status = ParseSafetensorsHeader(
      "test.safetensors",
      std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                    bytes.size()),
      &p.tensors, &metadata, &p.warnings);
  return p;
}

void ExpectError(const std::string& bytes, const std::string& fragment) {
  Parsed p = Parse(bytes);
  ASSERT_FALSE(p.status.ok()) << "expected an error containing: " << fragment;
  EXPECT_NE(p.status.message().find(fragment), std::string::npos) << p.status.message();
  EXPECT_NE(p.status.message().find("test.safetensors"), std::string::npos) << p.status.message();
}

const std::string kOneTensor = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST(Safetensors, ValidFileParses) {
  Parsed p = Parse(File(kOneTensor, 8));
  ASSERT_TRUE(p.status.ok()) << p.status.message();
  ASSERT_EQ(p.tensors.size(), 1u);
  EXPECT_EQ(p.tensors[0].name, "a");
  EXPECT_EQ(p.tensors[0].nbytes, 8u);
  EXPECT_EQ(p.tensors[0].offset, 8 + kOneTensor.size());
  EXPECT_TRUE(p.warnings.empty());
}

TEST(Safetensors, EmptyFileIsRejected) { ExpectError("", "too short"); }

TEST(Safetensors, TruncatedDataIsRejected) { ExpectError(File(kOneTensor, 4), "truncated"); }

TEST(Safetensors, HeaderLengthPastEndOfFileIsRejected) {
  ExpectError(File(kOneTensor, 8, 100000), "past the end");
}

TEST(Safetensors, HeaderLengthAboveCapIsRejected) {
  ExpectError(File(kOneTensor, 8, std::int64_t{1} << 40), "exceeds the limit");
}

TEST(Safetensors, HeaderNotStartingWithBraceIsRejected) {
  ExpectError(File("[1,2,3]", 0), "does not start with '{'");
}

TEST(Safetensors, HeaderThatIsNotJsonIsRejected) {
  ExpectError(File("{\"a\": nope", 0), "not a valid JSON object");
}

TEST(Safetensors, ReversedOffsetsAreRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "reversed");
}

TEST(Safetensors, OverlappingTensorsAreRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                   R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                   12),
              "overlaps");
}

TEST(Safetensors, ShapeThatDisagreesWithByteRangeIsRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
              "needs 12 bytes but data_offsets span 8");
}

TEST(Safetensors, ShapeWhoseSizeOverflowsIsRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],)"
                   R"("data_offsets":[0,8]}})",
                   8),
              "overflows 64 bits");
}

TEST(Safetensors, NegativeDimensionIsRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
              "negative dimension");
}

TEST(Safetensors, DuplicateKeysAreRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                   R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                   8),
              "appears twice");
}

TEST(Safetensors, UnknownDtypeIsRejected) {
  ExpectError(File(R"({"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", 8),
              "unsupported dtype \"F7\"");
}

TEST(Safetensors, MetadataWithNonStringValueIsRejected) {
  ExpectError(File(R"({"__metadata__":{"k":1}})", 0), "is not a string");
}

TEST(Safetensors, OffsetsPastEndOfFileAreRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[100,108]}})", 8),
              "the file is truncated");
}

TEST(Safetensors, OffsetsThatWrapAroundAreRejected) {
  // begin + the header's end overflows 64 bits; unchecked, the sum would wrap
  // to a small offset inside the file.
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2],)"
                   R"("data_offsets":[18446744073709551600,18446744073709551608]}})",
                   8),
              "past the end of the");
}

TEST(Safetensors, OffsetAboveInt64IsRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1e30]}})", 8),
              "non-negative integers");
}

TEST(Safetensors, EmptyHeaderIsRejected) { ExpectError(File("", 8), "does not start with '{'"); }

TEST(Safetensors, DeeplyNestedJsonIsRejected) {
  const std::size_t depth = 200000;
  ExpectError(File("{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}", 0),
              "entry is not a JSON object");
}

TEST(Safetensors, MetadataThatIsNotAnObjectIsRejected) {
  ExpectError(File(R"({"__metadata__":["format","pt"]})", 0), "__metadata__ is not a JSON object");
}

TEST(Safetensors, LargeMetadataUnderTheCapIsAccepted) {
  // Metadata counts against the header cap (kMaxHeaderBytes) and is
  // otherwise unlimited.
  const std::string big(4 << 20, 'x');
  Parsed p = Parse(File(R"({"__metadata__":{"notes":")" + big + R"("}})", 0));
  EXPECT_TRUE(p.status.ok()) << p.status.message();
}

TEST(Safetensors, TensorEntryWithMissingFieldsIsRejected) {
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "data_offsets");
  ExpectError(File(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), "dtype");
  ExpectError(File(R"({"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8),
              "non-integer");
}

TEST(Safetensors, GapsBetweenTensorsWarn) {
  Parsed p = Parse(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                        12));
  ASSERT_TRUE(p.status.ok()) << p.status.message();
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_NE(p.warnings[0].find("4 bytes between tensors"), std::string::npos);
}

TEST(Safetensors, TrailingBytesWarn) {
  Parsed p = Parse(File(kOneTensor, 12));
  ASSERT_TRUE(p.status.ok()) << p.status.message();
  ASSERT_EQ(p.warnings.size(), 1u);
  EXPECT_NE(p.warnings[0].find("4 trailing bytes"), std::string::npos);
}

TEST(Safetensors, MisalignedButValidFileIsAccepted) {
  // A header of odd length puts the data at an odd offset; that is legal.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} )";
  ASSERT_NE((8 + header.size()) % 4, 0u);
  Parsed p = Parse(File(header, 8));
  EXPECT_TRUE(p.status.ok()) << p.status.message();
}

TEST(Safetensors, WriterRoundTripsTensorsAndMetadata) {
  TempDir dir;
  const float values[3] = {1.5f, -2.0f, 3.25f};
  const std::string path = (dir.path() / "x.safetensors").string();
  Status written = WriteSafetensors(
      path,
      {{"w", DType::kF32, {3}, {reinterpret_cast<const std::uint8_t*>(values), 12}, {}},
       {"hole", DType::kF16, {2, 2}, {}, {}}},
      {{"format", "pt"}});
  ASSERT_TRUE(written.ok()) << written.message();
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  const TensorInfo* w = (*file)->Find("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(std::memcmp((*file)->Data(*w).data(), values, 12), 0);
  const TensorInfo* hole = (*file)->Find("hole");
  ASSERT_NE(hole, nullptr);
  EXPECT_EQ(hole->nbytes, 8u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_TRUE((*file)->warnings().empty());
  EXPECT_EQ((8 + (*file)->tensors().front().offset) % 8, 0u);
}

TEST(Safetensors, OpeningMissingFileNamesIt) {
  auto file = SafetensorsFile::Open("/nonexistent/dir/model.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("/nonexistent/dir/model.safetensors"), std::string::npos);
}

}  // namespace
}  // namespace sdonnx
