// Helpers shared by the benchmark tools: timing and the comparison of a
// model's float output with a reference output.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <vector>

namespace sdonnx::bench {

inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// How far an output is from its reference. Pairs where either value is NaN
// or infinite are counted, not measured.
struct Difference {
  double max_abs = 0;          // max |actual - reference| over finite pairs
  double reference_max = 0;    // max |reference| over its finite values
  std::size_t not_finite = 0;  // NaN and infinite values in actual
  std::size_t reference_not_finite = 0;

  // max_abs / reference_max, or max_abs when the reference is all zeros.
  double Relative() const { return reference_max > 0 ? max_abs / reference_max : max_abs; }
};

// Compares the first min(size) elements of `actual` and `reference`.
inline Difference CompareFloats(const std::vector<float>& actual,
                                const std::vector<float>& reference) {
  Difference d;
  const std::size_t n = std::min(actual.size(), reference.size());
  for (std::size_t i = 0; i < n; ++i) {
    const bool actual_finite = std::isfinite(actual[i]);
    const bool reference_finite = std::isfinite(reference[i]);
    if (!actual_finite) ++d.not_finite;
    if (!reference_finite) ++d.reference_not_finite;
    if (reference_finite)
      d.reference_max = std::max(d.reference_max, std::fabs(double{reference[i]}));
    if (actual_finite && reference_finite) {
      d.max_abs = std::max(d.max_abs, std::fabs(double{actual[i]} - reference[i]));
    }
  }
  return d;
}

}  // namespace sdonnx::bench
