// Samplers (diffusers calls them schedulers): the loop that turns noise into
// a latent, one UNet call per step. Each sampler reproduces the diffusers
// v0.35.2 class of the same method with the Stable Diffusion configuration:
// scaled_linear betas, steps_offset 1, set_alpha_to_one false, clip_sample
// false, DPM-Solver++ with final sigma 0. docs/samplers.md has the formulas.
//
// All buffers are flat float32 spans over a latent batch [B, 4, h, w], and
// the sampler treats every element alike. One generation looks like:
//
//   auto sampler = Sampler::Create(options);          // check ok()
//   NoiseSource noise(seed);
//   noise.Fill(latents);  scale by InitNoiseSigma()   // txt2img, or AddNoise
//   for (int i = 0; i < sampler->NumSteps(); ++i) {
//     copy latents to unet_input; ScaleModelInput(i, unet_input);
//     model_output = UNet(unet_input, Timesteps()[i]);
//     Step(i, model_output, latents, noise);
//   }
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "sampling/noise.h"
#include "sampling/schedule.h"
#include "util/status.h"

namespace sdonnx {

enum class SamplerKind { kEulerAncestral, kEuler, kDdim, kDpmpp2m, kDpmpp2mKarras, kLcm };

// Parses "euler_a", "euler", "ddim", "dpmpp_2m", "dpmpp_2m_karras" or "lcm".
Result<SamplerKind> ParseSamplerKind(std::string_view name);
std::string_view SamplerKindName(SamplerKind kind);

// Quantity the UNet predicts: the noise (SD 1.x, SD 2.x base) or the
// velocity v = alpha_t * noise - sigma_t * x0 (SD 2.x 768-v models).
enum class PredictionType { kEpsilon, kVPrediction };

// Parses "epsilon" or "v_prediction".
Result<PredictionType> ParsePredictionType(std::string_view name);
std::string_view PredictionTypeName(PredictionType prediction);

struct SamplerOptions {
  SamplerKind kind = SamplerKind::kEulerAncestral;
  // Inference steps of the full schedule: 1 to 1000, for lcm 1 to 50.
  int steps = 20;
  PredictionType prediction = PredictionType::kEpsilon;
  // Empty selects the sampler's diffusers default (DefaultSpacing). Karras
  // sigmas and LCM ignore the spacing, as diffusers does.
  std::optional<Spacing> spacing;
  // img2img strength in (0, 1]. The sampler runs the last
  // min(int(steps * strength), steps) steps of the full schedule, so 1 runs
  // them all. Double, so that the product truncates as in Python.
  double strength = 1.0;
};

// The spacing diffusers uses for `kind` when the config names none: leading
// for ddim and lcm, linspace for the others.
Spacing DefaultSpacing(SamplerKind kind);

namespace sampling_internal {

// A sampler's full schedule, before img2img drops its first steps.
struct FullSchedule {
  std::vector<float> timesteps;
  std::vector<float> sigmas;  // timesteps.size() + 1 values, or none
  float init_noise_sigma = 1.0f;
};

// Coefficients of AddNoise: out = signal * original + noise * noise_sample.
struct NoiseMix {
  double signal = 1.0;
  double noise = 0.0;
};

}  // namespace sampling_internal

class Sampler {
 public:
  // Validates `options` and computes the schedule. Errors name the invalid
  // option, its value and the valid range.
  static Result<std::unique_ptr<Sampler>> Create(const SamplerOptions& options);

  virtual ~Sampler() = default;
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // The options with the spacing filled in.
  const SamplerOptions& options() const { return options_; }

  // Number of UNet calls: the size of Timesteps().
  int NumSteps() const { return static_cast<int>(timesteps_.size()); }

  // Index of the first step run in the full schedule: steps - NumSteps().
  int StartIndex() const { return start_index_; }

  // The timestep to feed the UNet at each step. Integers, except for euler
  // and euler_a with linspace spacing, whose timesteps are fractional.
  const std::vector<float>& Timesteps() const { return timesteps_; }

  // The sigma of each step plus the final one (0), NumSteps() + 1 values.
  // Empty for ddim and lcm, which work on alpha_cumprod instead.
  const std::vector<float>& Sigmas() const { return sigmas_; }

  // The standard deviation of the initial txt2img latents: Fill them from a
  // NoiseSource and multiply by this. sigma_max for euler and euler_a
  // (sqrt(sigma_max^2 + 1) with leading spacing), 1 for the others.
  float InitNoiseSigma() const { return init_noise_sigma_; }

  // Scales a copy of the latents in place into the UNet input of `step`:
  // divides by sqrt(sigma^2 + 1) for euler and euler_a, leaves it unchanged
  // for the others. Fails if `step` is outside [0, NumSteps()).
  Status ScaleModelInput(int step, std::span<float> sample) const;

  // Advances `sample` in place from step `step` to the next, given the
  // UNet's output for it. Steps must be taken in order 0, 1, ...,
  // NumSteps() - 1 (dpmpp_2m keeps the previous output, and the noise drawn
  // by euler_a and lcm follows the order). euler_a draws sample.size() values
  // from `noise` on every step, lcm on every step but the last of the
  // schedule, and the others never. Fails on an out-of-order step or when
  // the sizes differ, leaving `sample` unchanged.
  Status Step(int step, std::span<const float> model_output, std::span<float> sample,
              NoiseSource& noise);

  // Writes into `out` the encoded image `original` noised to the first
  // timestep that runs (the one at StartIndex()), to start img2img:
  //   euler, euler_a:   original + sigma * noise
  //   dpmpp_2m(_karras): alpha * original + alpha * sigma * noise,
  //                      alpha = 1 / sqrt(sigma^2 + 1)
  //   ddim, lcm:        sqrt(a) * original + sqrt(1 - a) * noise,
  //                      a = alpha_cumprod at that timestep
  // `out` may alias `original`. Fails when the sizes differ.
  Status AddNoise(std::span<const float> original, std::span<const float> noise,
                  std::span<float> out) const;

 protected:
  using Schedule = sampling_internal::FullSchedule;
  using NoiseMix = sampling_internal::NoiseMix;
  Sampler(const SamplerOptions& options, Schedule schedule);

  // Index arguments below count in the full schedule.
  const Schedule& full_schedule() const { return full_; }
  // Leaves the UNet input unchanged unless overridden.
  virtual void ScaleModelInputAt(int index, std::span<float> sample) const;
  virtual NoiseMix NoiseMixAt(int index) const = 0;
  // Sizes are checked by the caller.
  virtual void StepAt(int index, std::span<const float> model_output, std::span<float> sample,
                      NoiseSource& noise) = 0;

 private:
  SamplerOptions options_;
  Schedule full_;
  int start_index_ = 0;
  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  float init_noise_sigma_ = 1.0f;
  int next_step_ = 0;
};

}  // namespace sdonnx
