// Seeded Gaussian noise that is bit-identical on every platform and compiler.
//
// std::normal_distribution is not used because each standard library picks
// its own algorithm. Here both the generator (xoshiro256**, seeded through
// SplitMix64) and the transform (Box-Muller) are written out, and the
// transform uses only IEEE-754 double operations whose results the standard
// fixes: +, -, *, /, sqrt and std::fma. docs/samplers.md gives the details.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace sdonnx {

// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter passed through
// a mixing function. Used here only to expand a seed into generator state.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next();

 private:
  std::uint64_t state_;
};

// xoshiro256** 1.0 (Blackman and Vigna, 2018), with its 256-bit state filled
// from the first four outputs of SplitMix64(seed), as its authors recommend.
class Xoshiro256StarStar {
 public:
  explicit Xoshiro256StarStar(std::uint64_t seed);
  std::uint64_t Next();

 private:
  std::uint64_t state_[4];
};

// Standard normal samples for initial latents and for the noise that
// ancestral and LCM steps add. The samples form one stream per seed: filling
// 10 values and then 7 gives the same 17 values as filling 17 at once.
class NoiseSource {
 public:
  explicit NoiseSource(std::uint64_t seed);
  virtual ~NoiseSource() = default;

  // Writes the next out.size() samples of the stream. Virtual so that a test
  // or a caller can replay noise from elsewhere (for example torch's).
  virtual void Fill(std::span<float> out);

 private:
  Xoshiro256StarStar generator_;
  // Box-Muller yields samples in pairs. When a Fill ends after the first of
  // a pair, the second waits here for the next Fill.
  float spare_ = 0.0f;
  bool has_spare_ = false;
};

// One stream per image of a batch: each Fill splits its span into as many
// equal parts as there are images and fills part b from the stream of
// `first_seed + b`. Image b of a batch then gets the noise that a run of
// one image with that seed gets, so any image can be made again alone.
class BatchNoiseSource : public NoiseSource {
 public:
  BatchNoiseSource(std::uint64_t first_seed, std::int64_t images);

  // A span that does not split evenly is filled from the first stream.
  void Fill(std::span<float> out) override;

 private:
  std::vector<NoiseSource> streams_;
};

}  // namespace sdonnx
