// Weight dtype conversion: exact widening, round-to-nearest-even narrowing
// to float16, and the counts of clamped and flushed values.
#include "formats/dtype_convert.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <random>
#include <vector>

#include "formats/checkpoint.h"
#include "test_support.h"

namespace sdonnx {
namespace {

using testing::Fixture;

std::span<const std::uint8_t> Bytes(const std::vector<float>& v) {
  return {reinterpret_cast<const std::uint8_t*>(v.data()), v.size() * sizeof(float)};
}

std::vector<std::uint16_t> ToHalf(const std::vector<float>& values, NarrowingCounts* counts) {
  std::vector<std::uint16_t> out(values.size());
  Status status =
      ConvertElements(DType::kF32, Bytes(values), DType::kF16,
                      {reinterpret_cast<std::uint8_t*>(out.data()), out.size() * 2}, counts);
  EXPECT_TRUE(status.ok()) << status.message();
  return out;
}

TEST(DTypeConvert, Bf16WidensToF32Exactly) {
  auto source = Checkpoint::Open(Fixture("ckpt/bf16.ckpt").string());
  ASSERT_TRUE(source.ok()) << source.status().message();
  auto expected = Checkpoint::Open(Fixture("ckpt/bf16.expected.safetensors").string());
  ASSERT_TRUE(expected.ok()) << expected.status().message();
  for (const TensorInfo& t : (*source)->tensors()) {
    SCOPED_TRACE(t.name);
    ASSERT_EQ(t.dtype, DType::kBF16);
    const TensorInfo* want = (*expected)->Find(t.name);
    ASSERT_NE(want, nullptr);
    std::vector<std::uint8_t> widened(t.nbytes * 2);
    NarrowingCounts counts;
    ASSERT_TRUE(
        ConvertElements(DType::kBF16, (*source)->Data(t), DType::kF32, widened, &counts).ok());
    const auto want_bytes = (*expected)->Data(*want);
    ASSERT_EQ(widened.size(), want_bytes.size());
    // Bitwise, so NaN payloads and the sign of zero count too.
    EXPECT_EQ(std::memcmp(widened.data(), want_bytes.data(), widened.size()), 0);
    EXPECT_FALSE(counts.lossy());
  }
}

TEST(DTypeConvert, Bf16ToF16CountsOverflowAndFlushes) {
  auto source = Checkpoint::Open(Fixture("ckpt/bf16.ckpt").string());
  ASSERT_TRUE(source.ok()) << source.status().message();
  const TensorInfo* values = (*source)->Find("values");
  const TensorInfo* negated = (*source)->Find("negated");
  ASSERT_NE(values, nullptr);
  ASSERT_NE(negated, nullptr);
  NarrowingCounts counts;
  std::vector<std::uint16_t> half(16);
  auto target = [&half](std::size_t first) {
    return std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(half.data() + first), 16);
  };
  ASSERT_TRUE(
      ConvertElements(DType::kBF16, (*source)->Data(*values), DType::kF16, target(0), &counts)
          .ok());
  ASSERT_TRUE(
      ConvertElements(DType::kBF16, (*source)->Data(*negated), DType::kF16, target(8), &counts)
          .ok());
  // Stored values: 0, -0, 1, 3.140625, 65536, the smallest subnormal, inf, NaN.
  const std::vector<std::uint16_t> expected = {0x0000, 0x8000, 0x3c00, 0x4248, 0x7bff, 0x0000,
                                               0x7c00, 0x7e00, 0x8000, 0x0000, 0xbc00, 0xc248,
                                               0xfbff, 0x8000, 0xfc00, 0x7e00};
  EXPECT_EQ(half, expected);
  EXPECT_EQ(counts.values, 16u);
  EXPECT_EQ(counts.clamped, 2u);          // +-65536
  EXPECT_EQ(counts.flushed_to_zero, 2u);  // +-9.2e-41
  EXPECT_EQ(counts.largest_clamped, 65536.0f);
}

TEST(DTypeConvert, F32ToF16RoundsToNearestEven) {
  NarrowingCounts counts;
  const float ulp = 1.0f / 1024;  // float16 spacing at 1.0
  const auto half =
      ToHalf({1 + ulp / 2, 1 + 3 * ulp / 2, 65504.0f, 65519.0f, 65520.0f, -1e6f, 5.96e-8f, 2e-8f},
             &counts);
  EXPECT_EQ(half[0], 0x3c00);  // tie rounds down to the even mantissa
  EXPECT_EQ(half[1], 0x3c02);  // tie rounds up to the even mantissa
  EXPECT_EQ(half[2], 0x7bff);
  EXPECT_EQ(half[3], 0x7bff);  // rounds down to 65504
  EXPECT_EQ(half[4], 0x7bff);  // rounds past 65504: clamped
  EXPECT_EQ(half[5], 0xfbff);
  EXPECT_EQ(half[6], 0x0001);  // the smallest float16 subnormal
  EXPECT_EQ(half[7], 0x0000);
  EXPECT_EQ(counts.clamped, 2u);
  EXPECT_EQ(counts.flushed_to_zero, 1u);
}

TEST(DTypeConvert, ParallelMatchesSerial) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3000.0f);
  std::vector<float> values(1 << 20);
  for (float& v : values) v = normal(rng) * normal(rng);
  std::vector<std::uint8_t> serial(values.size() * 2), parallel(values.size() * 2);
  NarrowingCounts serial_counts, parallel_counts;
  ASSERT_TRUE(
      ConvertElements(DType::kF32, Bytes(values), DType::kF16, serial, &serial_counts).ok());
  ASSERT_TRUE(ConvertElementsParallel(DType::kF32, Bytes(values), DType::kF16, parallel, 3,
                                      &parallel_counts)
                  .ok());
  EXPECT_EQ(serial, parallel);
  EXPECT_GT(serial_counts.clamped, 0u);
  EXPECT_EQ(serial_counts.clamped, parallel_counts.clamped);
  EXPECT_EQ(serial_counts.flushed_to_zero, parallel_counts.flushed_to_zero);
  EXPECT_EQ(serial_counts.values, parallel_counts.values);
}

TEST(DTypeConvert, RejectsIntegerSource) {
  std::vector<std::uint8_t> source(8), target(8);
  NarrowingCounts counts;
  Status status = ConvertElements(DType::kI32, source, DType::kF32, target, &counts);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("I32"), std::string::npos) << status.message();
}

// Every float16 bit pattern, NaN payloads and subnormals included, widens
// to the float32 value that HalfToFloat returns and narrows back to the
// same bits. Both the vector path and the scalar path for NaN groups run.
TEST(DTypeConvert, EveryHalfWidensAndNarrowsBack) {
  std::vector<std::uint16_t> halves(65536);
  for (std::size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<std::uint16_t>(i);
  std::vector<float> wide(halves.size());
  NarrowingCounts counts;
  ASSERT_TRUE(ConvertElements(DType::kF16,
                              {reinterpret_cast<const std::uint8_t*>(halves.data()), 65536 * 2},
                              DType::kF32,
                              {reinterpret_cast<std::uint8_t*>(wide.data()), 65536 * 4}, &counts)
                  .ok());
  for (std::size_t i = 0; i < halves.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(wide[i]),
              std::bit_cast<std::uint32_t>(HalfToFloat(halves[i])))
        << "half 0x" << std::hex << i;
  }
  std::vector<std::uint16_t> back(halves.size());
  ASSERT_TRUE(NarrowExactly(Bytes(wide), DType::kF16,
                            {reinterpret_cast<std::uint8_t*>(back.data()), back.size() * 2}));
  EXPECT_EQ(back, halves);
}

// A value that float16 cannot hold is found wherever it sits: first, inside
// a group of eight, or in the scalar tail.
TEST(DTypeConvert, NarrowExactlyFindsAnInexactValue) {
  for (const std::size_t at : {std::size_t{0}, std::size_t{13}, std::size_t{37}}) {
    SCOPED_TRACE(at);
    std::vector<float> values(38, 0.5f);
    values[at] = 0.1f;
    std::vector<std::uint16_t> out(values.size());
    EXPECT_FALSE(NarrowExactly(Bytes(values), DType::kF16,
                               {reinterpret_cast<std::uint8_t*>(out.data()), out.size() * 2}));
  }
  std::vector<float> bf16_values(9, 1.0f);
  bf16_values[8] = 1.0f + 1.0f / 1024;  // not a bfloat16 value
  std::vector<std::uint16_t> out(bf16_values.size());
  EXPECT_FALSE(NarrowExactly(Bytes(bf16_values), DType::kBF16,
                             {reinterpret_cast<std::uint8_t*>(out.data()), out.size() * 2}));
}

}  // namespace
}  // namespace sdonnx
