#include "sampling/noise.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

namespace sdonnx {
namespace {

// With excess precision (x87) the intermediate roundings, and so the output
// bits, would depend on register allocation.
static_assert(FLT_EVAL_METHOD == 0, "the noise source needs plain double arithmetic");

// Every multiply-add below that rounds is an explicit std::fma, which
// IEEE-754 defines as one rounding. A plain a * b + c could be fused or not
// at the compiler's choice (GCC fuses by default where the target has FMA),
// which would change the low bits from one build to the next. The plain
// ones left, such as 2n + 1, are exact either way.

constexpr double kLn2 = 0.6931471805599453;
constexpr double kSqrtHalf = 0.7071067811865476;
constexpr double kHalfPi = 1.5707963267948966;

std::uint64_t RotateLeft(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Computes the natural logarithm of u > 0. Writes u = m * 2^e with m in
// [sqrt(1/2), sqrt(2)) and sums ln m = 2 atanh(s), s = (m - 1) / (m + 1), as
// the series 2 s (1 + s^2/3 + s^4/5 + ...). Because |s| <= 0.172, twelve
// terms bring the truncation error below 1e-18.
double PortableLog(double u) {
  int exponent = 0;
  double m = std::frexp(u, &exponent);
  if (m < kSqrtHalf) {
    m *= 2.0;
    exponent -= 1;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double series = 1.0 / 23.0;
  for (int k = 10; k >= 0; --k) series = std::fma(series, s2, 1.0 / (2 * k + 1));
  return std::fma(static_cast<double>(exponent), kLn2, 2.0 * s * series);
}

// Computes sin x and cos x for x in [0, pi/4] from their Taylor series in
// nested (Horner) form. The first omitted terms are below 1e-21.
void SinCosSmall(double x, double* sin_x, double* cos_x) {
  const double x2 = x * x;
  double s = 1.0;
  for (int n = 9; n >= 1; --n) s = std::fma(-x2 / ((2.0 * n) * (2.0 * n + 1.0)), s, 1.0);
  double c = 1.0;
  for (int n = 10; n >= 1; --n) c = std::fma(-x2 / ((2.0 * n - 1.0) * (2.0 * n)), c, 1.0);
  *sin_x = x * s;
  *cos_x = c;
}

// Computes cos and sin of 2 pi u for u = (53-bit integer `turn_bits`) /
// 2^53. The top two bits pick the quadrant and the other 51 the angle inside
// it. Angles past the middle of the quadrant are mirrored, so the series
// only gets arguments up to pi/4. Quadrant and mirror steps are exact swaps
// and sign changes.
void CosSinOfTurn(std::uint64_t turn_bits, double* cos_theta, double* sin_theta) {
  constexpr std::uint64_t kFractionOne = std::uint64_t{1} << 51;
  const std::uint64_t quadrant = turn_bits >> 51;
  const std::uint64_t fraction = turn_bits & (kFractionOne - 1);
  const double scale = 1.0 / static_cast<double>(kFractionOne);

  double sin_b = 0.0;
  double cos_b = 0.0;
  if (fraction <= kFractionOne / 2) {
    SinCosSmall(static_cast<double>(fraction) * scale * kHalfPi, &sin_b, &cos_b);
  } else {
    const double mirrored = static_cast<double>(kFractionOne - fraction) * scale * kHalfPi;
    SinCosSmall(mirrored, &cos_b, &sin_b);
  }

  switch (quadrant) {
    case 0:
      *cos_theta = cos_b;
      *sin_theta = sin_b;
      break;
    case 1:
      *cos_theta = -sin_b;
      *sin_theta = cos_b;
      break;
    case 2:
      *cos_theta = -cos_b;
      *sin_theta = -sin_b;
      break;
    default:
      *cos_theta = sin_b;
      *sin_theta = -cos_b;
      break;
  }
}

}  // namespace

std::uint64_t SplitMix64::Next() {
  state_ += 0x9E3779B97F4A7C15ull;
  std::uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

Xoshiro256StarStar::Xoshiro256StarStar(std::uint64_t seed) {
  SplitMix64 seeder(seed);
  for (std::uint64_t& word : state_) word = seeder.Next();
}

std::uint64_t Xoshiro256StarStar::Next() {
  const std::uint64_t result = RotateLeft(state_[1] * 5, 7) * 9;
  const std::uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = RotateLeft(state_[3], 45);
  return result;
}

NoiseSource::NoiseSource(std::uint64_t seed) : generator_(seed) {}

void NoiseSource::Fill(std::span<float> out) {
  std::size_t i = 0;
  if (has_spare_ && i < out.size()) {
    out[i++] = spare_;
    has_spare_ = false;
  }
  while (i < out.size()) {
    // u is in (0, 1], so the logarithm is finite. u = 1 gives radius 0.
    const double u = static_cast<double>((generator_.Next() >> 11) + 1) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * PortableLog(u));
    double cos_theta = 0.0;
    double sin_theta = 0.0;
    CosSinOfTurn(generator_.Next() >> 11, &cos_theta, &sin_theta);

    out[i++] = static_cast<float>(radius * cos_theta);
    const auto second = static_cast<float>(radius * sin_theta);
    if (i < out.size()) {
      out[i++] = second;
    } else {
      spare_ = second;
      has_spare_ = true;
    }
  }
}

BatchNoiseSource::BatchNoiseSource(std::uint64_t first_seed, std::int64_t images)
    : NoiseSource(first_seed) {
  for (std::int64_t b = 0; b < std::max<std::int64_t>(images, 1); ++b) {
    streams_.emplace_back(first_seed + static_cast<std::uint64_t>(b));
  }
}

void BatchNoiseSource::Fill(std::span<float> out) {
  if (out.size() % streams_.size() != 0) {
    streams_.front().Fill(out);
    return;
  }
  const std::size_t part = out.size() / streams_.size();
  for (std::size_t b = 0; b < streams_.size(); ++b) streams_[b].Fill(out.subspan(b * part, part));
}

}  // namespace sdonnx
