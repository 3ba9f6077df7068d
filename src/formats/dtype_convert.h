// Conversion of floating-point weights between dtypes while they stream from
// a checkpoint to an output file.
//
// Widening (float16 or bfloat16 to float32) is exact. Narrowing to float16
// rounds to nearest, ties to even. A finite value beyond the float16 range
// (|x| > 65504 after rounding) is clamped to +-65504 rather than becoming an
// infinity, so an fp16 graph never meets an infinite weight that the source
// did not have; infinities and NaNs of the source stay what they are. Both
// clamped values and non-zero values that round to zero are counted.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "formats/dtype.h"
#include "util/status.h"

namespace sdonnx {

// Counts of a narrowing to float16, for one tensor or summed over many.
struct NarrowingCounts {
  std::uint64_t values = 0;
  std::uint64_t clamped = 0;          // finite values beyond the float16 range
  std::uint64_t flushed_to_zero = 0;  // non-zero values that became +-0
  float largest_clamped = 0;          // the largest magnitude that was clamped

  void Add(const NarrowingCounts& other);
  bool lossy() const { return clamped > 0 || flushed_to_zero > 0; }
};

// Converts `count` elements from `from` (F64, F32, F16 or BF16) at `source`
// to `to` (F32 or F16) at `target`. Both spans must contain exactly `count`
// elements. Counts are added to `counts`.
Status ConvertElements(DType from, std::span<const std::uint8_t> source, DType to,
                       std::span<std::uint8_t> target, NarrowingCounts* counts);

// The same, with the elements split into `threads` contiguous parts that
// convert at the same time.
Status ConvertElementsParallel(DType from, std::span<const std::uint8_t> source, DType to,
                               std::span<std::uint8_t> target, int threads,
                               NarrowingCounts* counts);

// Narrows float32 values at `source` to `to` (F16 or BF16) when every one
// of them is exactly a value of `to`, as after a widening. Returns false at
// the first value that is not, or for another `to` or a size mismatch;
// `target` is then partly written.
[[nodiscard]] bool NarrowExactly(std::span<const std::uint8_t> source, DType to,
                                 std::span<std::uint8_t> target);

}  // namespace sdonnx
